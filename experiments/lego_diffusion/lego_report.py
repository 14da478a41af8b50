"""results.json: the claims (ours beside the paper's quoted numbers), the notes and the
extra data, written with the tables (`lego_tables.py`) and figures."""

import os

import lego_cluster
import lego_hotswap
import lego_tables
import lego_variants

import xplib

EXPERIMENT = "lego_diffusion"
PAPER = "LegoDiffusion (arXiv 2604.08123)"


def _listed(ratios):
    """Ratios as "1.14, 4.09, inf" for a claim's text."""
    return ", ".join(f"{x:.2f}" for x in ratios)


def variant_claims(config, var):
    """The real server in the paper's regime: a rate and a CV claim per load source and
    variant count."""
    out = []
    rat = lego_variants.ratios(var)
    by = {(s["load"], s["variants"], s["mode"]): s for s in var["summary"]}
    for src in config.real_var_loads:
        for k in config.real_variants:
            mi, mo = by[(src, k, "micro")], by[(src, k, "monolithic")]
            rate_r, cv_r, sim_r, sim_cv_r = rat[(src, k)]
            regime = (
                f"REAL HTTP server, 2 CPU cores, {var['workers']} workers with "
                f"{var['budget'] / 1e6:.2f} MB of parameters each (all distinct models: a micro "
                f"worker holds every shared model, a monolithic worker a few of the {6 * k} "
                f"workflow replicas, a miss loads by {lego_variants.LOADS[src]}), {k} "
                f"variant(s) of each of the 6 workflows sharing the models, shifting Zipf mix"
            )
            out += [
                xplib.Claim(
                    f"max request rate at >= 90% SLO, {regime} (P50/P99 at the max rate: micro "
                    f"{mi['p50_ms']:.0f}/{mi['p99_ms']:.0f} ms, mono {mo['p50_ms']:.0f}/"
                    f"{mo['p99_ms']:.0f} ms; the simulator predicts {mi['sim_max_rate']:.1f} "
                    f"vs {mo['sim_max_rate']:.1f} req/s, ratio {sim_r:.2f}x)",
                    "req/s",
                    round(mi["max_rate"], 2),
                    round(mo["max_rate"], 2),
                    "up to 3x higher sustained request rate than monolithic serving",
                    baseline_name=f"monolithic, same memory (ratio {rate_r:.2f}x)",
                ),
                xplib.Claim(
                    f"burst tolerance: max arrival CV at >= 90% SLO, same regime ({src} loads, "
                    f"{k} variants), at {mi['cv_rate']:.1f} req/s (the simulator predicts "
                    f"{mi['sim_max_cv']:.2f} vs {mo['sim_max_cv']:.2f}, ratio {sim_cv_r:.2f}x)",
                    "Gamma CV",
                    round(mi["max_cv"], 2),
                    round(mo["max_cv"], 2),
                    "tolerates up to 8x higher burst traffic",
                    baseline_name=f"monolithic, same memory (ratio {cv_r:.2f}x)",
                ),
            ]
    return out


def claims(config, max_rate, max_cv, load, var, quality, sims, gpu):
    """Each measured claim beside the paper's quoted number; the first ones are the real
    server in the paper's regime (variants sharing models under a memory budget)."""
    by, pinned = sims["by"], sims["pinned"]
    mems, kvs = list(config.sim_memory), list(config.sim_variants)
    claim_mem = config.sim_claim_memory
    rate_ratios, cv_ratios = sims["rate"], sims["cv"]
    var_rate, var_cv = sims["var_rate"], sims["var_cv"]
    top = kvs[-1]

    def sim_ratio(mem, what):
        return lego_cluster.ratio_at(by, mem, what)

    def ratio(d, a="micro", b="monolithic"):
        return d[a] / d[b] if d[b] > 0 else float("inf")

    return [
        *variant_claims(config, var),
        xplib.Claim(
            f"max request rate at >= 90% SLO, REAL HTTP server, 2 CPU cores, "
            f"{config.num_workers} worker slots, 1 variant of each of the 6 workflows, all "
            "models resident (no memory limit, no loads)",
            "req/s",
            round(max_rate["micro"], 2),
            round(max_rate["monolithic"], 2),
            "up to 3x higher sustained request rate than monolithic serving",
            baseline_name=f"monolithic (ratio {ratio(max_rate):.2f}x)",
        ),
        *(
            [
                xplib.Claim(
                    "max request rate at >= 90% SLO, real server, inline path off (every batch "
                    "through the worker threads)",
                    "req/s",
                    round(max_rate["micro (inline off)"], 2),
                    round(max_rate["monolithic (inline off)"], 2),
                    "up to 3x higher sustained request rate than monolithic serving",
                    baseline_name="monolithic, inline off (ratio "
                    f"{ratio(max_rate, 'micro (inline off)', 'monolithic (inline off)'):.2f}x)",
                )
            ]
            if config.inline_off
            else []
        ),
        xplib.Claim(
            "burst tolerance: max arrival CV at >= 90% SLO, same resident regime",
            "Gamma CV",
            round(max_cv["micro"], 2),
            round(max_cv["monolithic"], 2),
            "tolerates up to 8x higher burst traffic",
            baseline_name=f"monolithic (ratio {ratio(max_cv):.2f}x)",
        ),
        xplib.Claim(
            f"max rate at >= 90% SLO, simulated {config.sim_workers} devices, memory "
            f"{claim_mem}x the largest workflow, shifting skewed mix, measured load times "
            f"(micro/mono ratio across memory {mems}: " + _listed(rate_ratios) + ")",
            "req/s",
            round(by[("micro", claim_mem, 1)]["max_rate"], 1),
            round(by[("monolithic", claim_mem, 1)]["max_rate"], 1),
            "up to 3x (cluster scale)",
            baseline_name="monolithic, same memory "
            f"(ratio {sim_ratio(claim_mem, 'max_rate'):.2f}x)",
        ),
        xplib.Claim(
            f"burst tolerance (max CV at >= 90% SLO), simulated {config.sim_workers} devices, "
            f"memory {claim_mem}x (ratio across memory {mems}: " + _listed(cv_ratios) + ")",
            "Gamma CV",
            round(by[("micro", claim_mem, 1)]["max_cv"], 2),
            round(by[("monolithic", claim_mem, 1)]["max_cv"], 2),
            "up to 8x higher burst traffic",
            baseline_name=f"monolithic, same memory (ratio {sim_ratio(claim_mem, 'max_cv'):.2f}x)",
        ),
        xplib.Claim(
            f"max rate at >= 90% SLO, simulated {config.sim_workers} devices, memory "
            f"{claim_mem}x, {top} variants of each workflow sharing its models (ratio "
            f"across variants {kvs}: " + _listed(var_rate) + ")",
            "req/s",
            round(by[("micro", claim_mem, top)]["max_rate"], 1),
            round(by[("monolithic", claim_mem, top)]["max_rate"], 1),
            "up to 3x (cluster scale)",
            baseline_name=f"monolithic, same memory (ratio {var_rate[-1]:.2f}x)",
        ),
        xplib.Claim(
            f"burst tolerance (max CV at >= 90% SLO), simulated, memory {claim_mem}x, {top} "
            f"variants (ratio across variants {kvs}: " + _listed(var_cv) + ")",
            "Gamma CV",
            round(by[("micro", claim_mem, top)]["max_cv"], 2),
            round(by[("monolithic", claim_mem, top)]["max_cv"], 2),
            "up to 8x higher burst traffic",
            baseline_name=f"monolithic, same memory (ratio {var_cv[-1]:.2f}x)",
        ),
        xplib.Claim(
            f"max rate at >= 90% SLO, simulated {config.sim_workers} devices, vs monolithic "
            "replicas pinned to workflows (equal shares, all models resident)",
            "req/s",
            round(by[("micro", 0.0, 1)]["max_rate"], 1),
            round(pinned["max_rate"], 1),
            "up to 3x (cluster scale)",
            baseline_name="monolithic pinned (ratio "
            f"{by[('micro', 0.0, 1)]['max_rate'] / max(pinned['max_rate'], 1e-9):.2f}x)",
        ),
        *(
            []
            if gpu is None
            else [
                xplib.Claim(
                    f"SIMULATED with {gpu['kind']} per-node timings (not a real GPU server): "
                    f"max rate at >= 90% SLO, {config.sim_workers} devices, memory {claim_mem}x, "
                    f"1 variant (ratio across memory {mems}: "
                    + _listed(gpu["rate"])
                    + f"; across variants {kvs}: "
                    + _listed(gpu["var_rate"])
                    + ")",
                    "req/s",
                    round(gpu["by"][("micro", claim_mem, 1)]["max_rate"], 1),
                    round(gpu["by"][("monolithic", claim_mem, 1)]["max_rate"], 1),
                    "up to 3x (cluster scale)",
                    baseline_name=f"monolithic, same memory (ratio {gpu['claim_rate']:.2f}x)",
                ),
                xplib.Claim(
                    f"SIMULATED with {gpu['kind']} per-node timings (not a real GPU server): "
                    f"max CV at >= 90% SLO, memory {claim_mem}x, 1 variant (range "
                    f"{list(config.sim_cv_range)}; ratio across memory {mems}: "
                    + _listed(gpu["cv"])
                    + f"; across variants {kvs}: "
                    + _listed(gpu["var_cv"])
                    + ")",
                    "Gamma CV",
                    round(gpu["by"][("micro", claim_mem, 1)]["max_cv"], 2),
                    round(gpu["by"][("monolithic", claim_mem, 1)]["max_cv"], 2),
                    "up to 8x higher burst traffic",
                    baseline_name=f"monolithic, same memory (ratio {gpu['claim_cv']:.2f}x)",
                ),
            ]
        ),
        xplib.Claim(
            "parameter memory for the six workflows (model sharing)",
            "MB",
            round(load["mem"]["micro"] / 1e6, 3),
            round(load["mem"]["monolithic"] / 1e6, 3),
            "model sharing across workflows (no number given)",
            better="lower",
            baseline_name="monolithic (one copy per workflow replica)",
        ),
        xplib.Claim(
            "conditioning accuracy of served t2i digits (classifier judge)",
            "accuracy",
            round(quality["cond_acc"], 3),
            round(quality["real_acc"], 3),
            "quality is unchanged by the serving system",
            baseline_name="classifier on real digits",
        ),
    ]


def notes(config, load, gcl, gpu, gpu_path):
    """What was served and simulated, in words."""
    return (
        f"Six workflows (t2i, t2i_upscale, t2i_checked, control_upscale, t2i_lora, t2i_latent) "
        f"share the encoder (all six), the DiT weights (denoiser: 3 workflows; denoiser_ctrl and "
        f"the LoRA node denoiser_lora hold the same base), the upscaler (2). The trace's "
        f"loras[] name a trained LoRA adapter ({', '.join(config.lora_names)}) served by "
        f"denoiser_lora; its base_model_id 'ldm-digits' ({config.latent_share:.0%}) asks for the "
        f"latent workflow (VAE). {config.num_workers} worker slots in both "
        f"modes; monolithic gives each workflow one replica running the whole DAG with "
        f"request-level batching; micro-serving batches each model across workflows. SLO = "
        f"{config.slo_scale} x standalone latency. Capacity estimate "
        f"{load['capacity']:.1f} req/s from node profiles. One process, real HTTP server "
        f"(Starlette on uvicorn, localhost; aiohttp client), the CPU shared with the load "
        f"generator (and other jobs on this machine). "
        f"The paper's regime on the real server (the first claims): {list(config.real_variants)} "
        f"variant(s) of each workflow sharing its models, {config.real_var_workers} workers "
        f"each holding the bytes of every distinct model (micro: one instance of each, never "
        f"a load; monolithic: a few whole replicas, loading on a miss by "
        f"{' or '.join(lego_variants.LOADS[x] for x in config.real_var_loads)}); a monolith "
        f"that never reaches 90% at the lowest rate searched gives an infinite ratio. "
        f"Simulated cluster: {config.sim_workers} devices, measured orbax load times, device "
        f"memory swept over {list(config.sim_memory)} x the largest workflow (0 = all fit) and "
        f"{list(config.sim_variants)} variants of each workflow sharing its models; monolithic "
        f"replicas under a memory budget may switch workflows by reloading. "
        + (
            f"No GPU node profile at {os.path.relpath(gpu_path)}: the GPU-calibrated "
            "simulation was not run."
            if gcl is None
            else f"The same simulated sweep was also calibrated on per-node timings, parameter "
            f"bytes and orbax load times measured on {gpu['kind']} "
            f"({os.path.relpath(gcl['path'])}, by benchmarks/profile_nodes.py); this is a "
            f"simulation with GPU-measured node costs, not a GPU server. Its batch-16 / batch-1 "
            f"cost per node: "
            + ", ".join(f"{m} {r:.2f}" for m, r in gcl["batch16_over_1"].items())
            + "."
        )
    )


def extra(config, max_rate, max_cv, load, var, quality, sims, gcl, gpu, load_times, cpu_s):
    """The raw numbers behind the claims and tables (results.json `extra`)."""
    mems, kvs = list(config.sim_memory), list(config.sim_variants)
    rate_ratios, cv_ratios = sims["rate"], sims["cv"]
    var_rate, var_cv = sims["var_rate"], sims["var_cv"]
    cl, before = sims["cl"], sims["before"]
    return {
        "max_rate": max_rate,
        "max_cv": max_cv,
        "sim_memory_sweep": cl["rows"],
        "sim_bucket_filling": before,
        "cpu_s": cpu_s,
        "sim_rate_ratios": dict(zip(map(str, mems), rate_ratios, strict=True)),
        "sim_cv_ratios": dict(zip(map(str, mems), cv_ratios, strict=True)),
        "sim_variant_rate_ratios": dict(zip(map(str, kvs), var_rate, strict=True)),
        "sim_variant_cv_ratios": dict(zip(map(str, kvs), var_cv, strict=True)),
        "load_times_s": load_times,
        "real_variants": var,
        "real_variant_ratios": {
            f"{src} {k}": dict(
                zip(("rate", "cv", "simulated_rate", "simulated_cv"), r, strict=True)
            )
            for (src, k), r in lego_variants.ratios(var).items()
        },
        "request_overhead_s": load["overhead"],
        "profiles": load["prof"],
        "gpu_profile": None
        if gcl is None
        else {
            "path": os.path.relpath(gcl["path"]),
            "meta": gcl["meta"],
            "sweep": gcl["rows"],
            "capacity": gcl["capacity"],
            "time_scale": gcl["time_scale"],
            "load_over_phase": gcl["load_over_phase"],
            "batch16_over_1": gcl["batch16_over_1"],
            "rate_ratios": dict(zip(map(str, mems), gpu["rate"], strict=True)),
            "cv_ratios": dict(zip(map(str, mems), gpu["cv"], strict=True)),
            "variant_rate_ratios": dict(zip(map(str, kvs), gpu["var_rate"], strict=True)),
            "variant_cv_ratios": dict(zip(map(str, kvs), gpu["var_cv"], strict=True)),
            "bucket_filling": gpu["before"],
        },
        "standalone_s": load["standalone"],
        "quality": {
            k: v if isinstance(v, dict) else float(v)
            for k, v in quality.items()
            if not k.startswith("samples")
        },
    }


def write_report(
    config,
    workdir,
    *,
    catalog,
    max_rate,
    max_cv,
    load,
    var,
    quality,
    load_times,
    sims,
    gcl,
    gpu,
    gpu_path,
    figs,
    train_s,
    cpu_s,
    t_start,
    hot,
):
    """Claims, tables, notes and extra data -> `workdir`/results.json (`hot`: the simulated
    hot-swap comparison, `lego_hotswap.run`)."""
    xplib.write_results(
        workdir,
        experiment=EXPERIMENT,
        paper=PAPER,
        preset=config.preset,
        claims=claims(config, max_rate, max_cv, load, var, quality, sims, gpu)
        + lego_hotswap.claims(config, hot),
        tables=lego_tables.tables(
            config,
            catalog,
            load,
            var,
            quality,
            sims,
            gcl,
            gpu,
            load_times,
            train_s,
            cpu_s,
            t_start,
        )
        + lego_hotswap.tables(hot),
        figures=figs,
        notes=notes(config, load, gcl, gpu, gpu_path),
        extra=extra(config, max_rate, max_cv, load, var, quality, sims, gcl, gpu, load_times, cpu_s)
        | {"hot_swap_sim": hot},
    )
