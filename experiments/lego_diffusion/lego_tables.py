"""The report's tables: real-server sweeps, the simulated memory/variant sweeps (CPU- and
GPU-calibrated), the memory-budget validation, load times, SLOs, quality and timings."""

import os
import time

import lego_variants
import numpy as np

import xplib

SWEEP_COLUMNS = ["system", "memory", "variants", "max rate req/s", "max CV", "loads (median run)"]


def _sweep_rows(rows):
    """Memory-sweep rows (`lego_cluster.memory_sweep`) as table rows."""
    return [
        [
            r["system"],
            "all, pinned" if r["memory"] is None else r["memory"],
            r["variants"],
            round(r["max_rate"], 1),
            round(r["max_cv"], 2),
            r["loads"],
        ]
        for r in rows
    ]


def tables(
    config, catalog, load, var, quality, sims, gcl, gpu, load_times, train_s, cpu_s, t_start
):
    """Every table of the report, in the report's order."""
    mems, kvs = list(config.sim_memory), list(config.sim_variants)
    claim_mem = config.sim_claim_memory
    rate_ratios, cv_ratios = sims["rate"], sims["cv"]
    var_rate, var_cv = sims["var_rate"], sims["var_cv"]
    cl, before = sims["cl"], sims["before"]
    return [
        *lego_variants.tables(config, var),
        xplib.Table(
            "Rate sweep, real server, all models resident, 1 variant (Poisson, trace-schema "
            "workload mix)",
            ["mode", "rate req/s", "SLO attainment", "simulated", "P50 ms", "P99 ms", "429s"],
            load["rate_rows"],
        ),
        xplib.Table(
            f"CV sweep at {load['cv_rate']:.1f} req/s "
            f"({config.cv_rate_fraction:.0%} of the monolithic max rate)",
            ["mode", "CV", "SLO attainment", "simulated", "P50 ms", "P99 ms", "429s"],
            load["cv_rows"],
        ),
        xplib.Table(
            f"Simulated {config.sim_workers} devices: device memory sweep (x "
            f"{cl['unit_bytes'] / 1e6:.2f} MB, the largest workflow; 0 = every replica fits), "
            f"shifting Zipf mix (skew {config.sim_skew}, reshuffled every "
            f"{config.sim_phase_s} s), CV sweep at {cl['cv_rate']:.0f} req/s",
            SWEEP_COLUMNS,
            _sweep_rows(cl["rows"]),
        ),
        *(
            []
            if gcl is None
            else [
                xplib.Table(
                    f"SIMULATED cluster calibrated on {gpu['kind']} per-node timings "
                    f"({os.path.relpath(gcl['path'])}, jax {gcl['meta']['jax_version']}, "
                    f"weights {gcl['meta']['weights'].split(' (')[0]}; not a real GPU server): "
                    f"{config.sim_workers} devices, same sweep as above; rates are multiples of "
                    f"the batched capacity {gcl['capacity']:.0f} req/s, workload time axis x"
                    f"{gcl['time_scale']:.3g} (phase {1e3 * gcl['phase_s']:.1f} ms, mean load / "
                    f"phase {gcl['load_over_phase']:.2f}), CV sweep at {gcl['cv_rate']:.0f} req/s"
                    + ("" if gcl["same_zoo"] else "; profile measured on a different zoo size"),
                    SWEEP_COLUMNS,
                    _sweep_rows(gcl["rows"]),
                ),
                xplib.Table(
                    "micro/mono ratios at >= 90% SLO: simulated cluster calibrated on CPU vs "
                    f"on {gpu['kind']} per-node profiles (paper: rate up to 3x, CV up to 8x)",
                    ["point", "rate CPU", f"rate {gpu['kind']}", "CV CPU", f"CV {gpu['kind']}"],
                    [
                        [
                            f"memory {m}x, 1 variant",
                            round(a, 2),
                            round(b, 2),
                            round(c, 2),
                            round(d, 2),
                        ]
                        for m, a, b, c, d in zip(
                            mems, rate_ratios, gpu["rate"], cv_ratios, gpu["cv"], strict=True
                        )
                    ]
                    + [
                        [
                            f"memory {claim_mem}x, {k} variants",
                            round(a, 2),
                            round(b, 2),
                            round(c, 2),
                            round(d, 2),
                        ]
                        for k, a, b, c, d in zip(
                            kvs, var_rate, gpu["var_rate"], var_cv, gpu["var_cv"], strict=True
                        )
                        if k > 1
                    ]
                    + (
                        [
                            [
                                f"memory {claim_mem}x, 1 variant, BEFORE: bucket-filling dispatch "
                                "(no batching policy; rates req/s micro / mono CPU "
                                f"{before['micro']['max_rate']:.0f} / "
                                f"{before['monolithic']['max_rate']:.0f}, {gpu['kind']} "
                                f"{gpu['before']['micro']['max_rate']:.0f} / "
                                f"{gpu['before']['monolithic']['max_rate']:.0f})",
                                round(before["rate_ratio"], 2),
                                round(gpu["before"]["rate_ratio"], 2),
                                "-",
                                "-",
                            ]
                        ]
                        if before is not None
                        else []
                    ),
                ),
            ]
        ),
        xplib.Table(
            "Measured model load times (median of 3) and sizes",
            ["model", "MB", "orbax restore ms", "device_put ms"],
            [
                [
                    m,
                    round(catalog.models[m].param_bytes / 1e6, 3),
                    round(1e3 * a, 2),
                    round(1e3 * b, 3),
                ]
                for m, (a, b) in load_times.items()
            ],
        ),
        xplib.Table(
            "Workflows: standalone latency and SLO",
            ["workflow", "standalone ms", "SLO ms"],
            [
                [w, round(1000 * t, 2), round(1000 * load["slo"][w], 2)]
                for w, t in load["standalone"].items()
            ],
        ),
        xplib.Table(
            "Quality and simulator",
            ["metric", "value"],
            [
                ["conditioning accuracy, t2i", round(quality["cond_acc"], 3)],
                [
                    "conditioning accuracy, t2i_latent (latent DiT + VAE decoder)",
                    round(quality["cond_acc_latent"], 3),
                ],
                [
                    "classifier-Frechet distance, t2i_latent vs real",
                    round(quality["frechet_latent"], 3),
                ],
                [
                    "conditioning accuracy, t2i_lora (bold adapter)",
                    round(quality["cond_acc_lora"], 3),
                ],
                [
                    "ink (mean stroke mass): real / real bold / t2i / t2i_lora",
                    " / ".join(f"{v:.3f}" for v in quality["ink"].values()),
                ],
                [
                    "conditioning accuracy, control (edges of a real digit)",
                    round(quality["cond_acc_control"], 3),
                ],
                ["classifier accuracy on real digits", round(quality["real_acc"], 3)],
                ["classifier-Frechet distance generated vs real", round(quality["frechet"], 3)],
                [
                    "classifier-Frechet distance clipped noise vs real",
                    round(quality["frechet_noise"], 3),
                ],
                [
                    "simulator |attainment error| vs real runs (median)",
                    round(float(np.median(load["sim_err"])), 3),
                ],
                ["training seconds", round(train_s, 1)],
                [
                    "CPU seconds per phase (this process)",
                    ", ".join(f"{k} {v:.1f}" for k, v in cpu_s.items()),
                ],
                ["total seconds", round(time.perf_counter() - t_start, 1)],
            ],
        ),
    ]
