"""The paper's regime on the REAL server: many workflow variants ("scenes") sharing a few
base models under a per-worker memory budget.

Each of the six workflows is registered `variants` times (`t2i#0`, `t2i#1`, ...: the same
model nodes, as a production catalogue's scene/LoRA/ControlNet pipelines share base models).
Every worker holds `memory_bytes` of parameters: the bytes of all distinct models, so a
micro-serving worker holds one instance of every shared model, while a monolithic worker
holds whole workflow replicas (their own copies) and only a few of the 6 x variants scenes
at once; a miss really restores the replica's weights with orbax. A shifting Zipf mix makes
the popular scene change. Max rate (Poisson) and max CV (Gamma) at >= 90% SLO are found by
geometric bisection on real runs, and the simulator, given the same arrivals, budget and
measured load times, predicts every point and its own maxima (its error is reported)."""

import functools
from typing import NamedTuple

import jax
import lego_cluster
import lego_server
import ml_collections
import numpy as np
from absl import logging

import diffusion_serve_jax as ds
import xplib


class Setting(NamedTuple):
    """What every run of the variant sweep shares."""

    config: ml_collections.ConfigDict
    prof: dict  # per-model, per-bucket seconds (the batching policy and the simulator)
    overhead: float  # per-request HTTP overhead the simulator adds
    budget: float  # parameter bytes per worker
    sizes: dict  # model -> parameter bytes
    load_s: dict  # model -> measured orbax restore seconds
    workers: int
    cores: float
    key: jax.Array


def arrivals(st, names, rate, cv):
    """Shifting Zipf mix over `names`: (time, workflow) pairs, for `real_var_duration_s` or
    long enough for `real_var_min_requests` requests on average at a low rate."""
    c = st.config
    duration = max(c.real_var_duration_s, c.real_var_min_requests / rate)
    return ds.shifting_mix(
        names, rate, duration, cv=cv, phase_s=c.real_var_phase_s, skew=c.sim_skew, key=st.key
    )


def simulated(st, vcat, mode, slo, policy, arr):
    """(SLO attainment, loads) of the simulator given the real run's setting and arrivals."""
    c = st.config
    lat, stats = ds.simulate(
        vcat.workflows,
        st.prof,
        arr,
        mode=mode,
        num_workers=st.workers,
        max_batch=c.max_batch,
        slo_s=slo,
        queue_limit=c.queue_limit,
        cores=st.cores,
        request_overhead_s=st.overhead,
        memory_bytes=st.budget,
        model_bytes=st.sizes,
        load_s=st.load_s,
        batching=policy,
        with_stats=True,
    )
    return lego_server.sim_attainment(lat, [w for _, w in arr], slo), stats["loads"]


async def bisect_async(probe, lo, hi, iters):
    """`lego_cluster.bisect_max` with an awaited predicate `probe(x) -> bool`."""
    if not await probe(lo):
        return 0.0
    if await probe(hi):
        return hi
    for _ in range(iters):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if await probe(mid) else (lo, mid)
    return lo


def host_loader(catalog):
    """model -> its weights copied to the device from a host-memory copy (`jax.device_put`):
    a swap from host RAM, the cheap load (the weights stay in host memory, as a GPU server
    keeps its models in pinned host memory)."""
    host = {m: jax.tree.map(np.array, spec.params) for m, spec in catalog.models.items()}

    def load(name):
        return jax.block_until_ready(jax.device_put(host[name], jax.devices()[0]))

    return load


async def run_variants(config, catalog, executors, load, load_times, edges, logger, workdir):
    """Real-server rate and CV bisections in both modes for each load source
    (`real_var_loads`: "orbax" restores from disk, "host" copies from host memory, with the
    measured `load_times` {model: (orbax s, device_put s)}) and each `real_variants` count,
    with the resident sweep's profiles, SLOs and capacity estimate (`load`, from
    `lego_server.run_load`). Returns {"rows": every real point, "summary": per (load,
    variants, mode) maxima, P50/P99 at the max rate and the simulator's maxima, "budget",
    "workers", "sim_err"}."""
    used = lego_cluster.used_models(catalog)
    sizes = {m: catalog.models[m].param_bytes for m in used}
    workers = config.real_var_workers
    loaders = {
        "orbax": (lego_server.orbax_loader(catalog, workdir), 0),
        "host": (host_loader(catalog), 1),
    }
    rows, summary = [], []
    for source in config.real_var_loads:
        loader, which = loaders[source]
        st = Setting(
            config=config,
            prof=load["prof"],
            overhead=load["overhead"],
            budget=float(sum(sizes.values())),  # every distinct model: a micro worker holds all
            sizes=sizes,
            load_s={m: t[which] for m, t in load_times.items()},
            workers=workers,
            cores=float(min(load["cores"], workers)),
            key=jax.random.key(config.seed + 77),
        )
        serving = dict(
            executors=executors,
            loader=loader,
            source=source,
            make_one=lego_server.request_maker(config, edges),
            logger=logger,
        )
        for k in config.real_variants:
            vcat = catalog.with_variants(k)
            summary += await sweep_variants(st, vcat, k, load, serving, rows)
    err = [abs(r[5] - r[9]) for r in rows]
    return {
        "rows": rows,
        "summary": summary,
        "budget": float(sum(sizes.values())),
        "workers": workers,
        "sim_err": float(np.median(err)) if err else float("nan"),
        "sim_err_mean": float(np.mean(err)) if err else float("nan"),
    }


async def sweep_variants(st, vcat, k, load, serving, rows):
    """Both modes serving `vcat` (k variants per workflow): rate bisection on Poisson
    arrivals, then CV bisection for both at `cv_rate_fraction` of the lower of the two max
    rates (a rate both sustain with Poisson arrivals; of the lowest searched rate if a mode
    has none). Every real point is appended to `rows`. Returns one summary per mode with
    the simulator's maxima beside the real ones."""
    c = st.config
    names = sorted(vcat.workflows)
    slo = {w: load["slo"][w.split("#")[0]] for w in names}
    dev = {w: load["device_s"][w.split("#")[0]] for w in names}
    policy = lego_cluster.batch_policy(c, vcat.workflows, st.prof, dev)
    lo, hi = (f * load["capacity"] for f in c.real_var_rate_range)
    cv_lo, cv_hi = c.real_var_cv_range
    runtimes = {
        mode: ds.ServingRuntime(
            vcat,
            mode=mode,
            num_workers=st.workers,
            max_batch=c.max_batch,
            queue_limit=c.queue_limit,
            executors=serving["executors"],
            memory_bytes=st.budget,
            loader=serving["loader"],
            load_s=st.load_s,
            batching=policy,
        )
        for mode in ("micro", "monolithic")
    }
    servers = {mode: await ds.serve(rt) for mode, rt in runtimes.items()}
    for server in servers.values():
        await lego_server.warm_up(server.url, serving["make_one"], names)
    got = {mode: {} for mode in runtimes}

    async def probe(mode, rate, cv):
        arr = arrivals(st, names, rate, cv)
        rt = runtimes[mode]
        before = rt.stats.loads
        outcomes = await ds.run_open_loop(
            servers[mode].url,
            [t for t, _ in arr],
            lambda j: serving["make_one"](arr[j][1], j),
        )
        s = lego_server.summarize(outcomes, slo)
        s["loads"] = rt.stats.loads - before
        s["sim_attainment"], s["sim_loads"] = simulated(st, vcat, mode, slo, policy, arr)
        serving["logger"].log(
            len(rows), sweep=f"{serving['source']} {k} {mode}", rate=rate, cv=cv, **s
        )
        rows.append([serving["source"], mode, k, round(rate, 1), round(cv, 2)] + _row(s))
        got[mode][(rate, cv)] = s
        return s["attainment"] >= 0.9

    def sim_ok(mode, rate, cv):
        return simulated(st, vcat, mode, slo, policy, arrivals(st, names, rate, cv))[0] >= 0.9

    max_rate = {}
    for mode in runtimes:
        max_rate[mode] = await bisect_async(
            functools.partial(probe, mode, cv=1.0), lo, hi, c.real_var_bisect
        )
    cv_rate = c.cv_rate_fraction * (min(max_rate.values()) or lo)
    out = []
    for mode in runtimes:
        max_cv = await bisect_async(
            functools.partial(probe, mode, cv_rate), cv_lo, cv_hi, c.real_var_cv_bisect
        )
        await servers[mode].close()
        at = max_rate[mode] or lo
        out.append(
            {
                "load": serving["source"],
                "mode": mode,
                "variants": k,
                "max_rate": max_rate[mode],
                "max_cv": max_cv,
                "cv_rate": cv_rate,
                "at_rate": at,
                "p50_ms": got[mode][(at, 1.0)]["p50_ms"],
                "p99_ms": got[mode][(at, 1.0)]["p99_ms"],
                "loads": int(sum(s["loads"] for s in got[mode].values())),
                "sim_max_rate": lego_cluster.bisect_max(
                    functools.partial(sim_ok, mode, cv=1.0), lo, hi, c.real_var_bisect
                ),
                "sim_max_cv": lego_cluster.bisect_max(
                    functools.partial(sim_ok, mode, cv_rate), cv_lo, cv_hi, c.real_var_cv_bisect
                ),
            }
        )
        logging.info("%s loads, %d variants, %s: %s", serving["source"], k, mode, out[-1])
    return out


def _row(s):
    """Real-run summary -> [attainment, P50, P99, 429s, simulated, loads, simulated loads]."""
    return [
        round(s["attainment"], 3),
        round(s["p50_ms"], 1),
        round(s["p99_ms"], 1),
        s["rejected"],
        round(s["sim_attainment"], 3),
        s["loads"],
        s["sim_loads"],
    ]


LOADS = {
    "orbax": "orbax restore from local disk",
    "host": "device_put of a host-memory copy",
}


def ratios(var):
    """{(load source, variants): (rate ratio, CV ratio, simulated rate ratio, simulated CV
    ratio)}, micro / monolithic."""
    by = {(s["load"], s["variants"], s["mode"]): s for s in var["summary"]}

    def r(a, b):
        return a / b if b > 0 else float("inf")

    out = {}
    for src, k in sorted({(s["load"], s["variants"]) for s in var["summary"]}):
        mi, mo = by[(src, k, "micro")], by[(src, k, "monolithic")]
        out[(src, k)] = tuple(
            r(mi[x], mo[x]) for x in ("max_rate", "max_cv", "sim_max_rate", "sim_max_cv")
        )
    return out


def tables(config, var):
    """The real variant sweep's point table and its summary."""
    head = (
        f"Real server, {var['workers']} workers with {var['budget'] / 1e6:.2f} MB of "
        "parameters each (every distinct model: a micro worker holds one instance of each, a "
        "monolithic worker a few whole workflow replicas, loaded on a miss: orbax = restore "
        "from disk, host = device_put of a host-memory copy), variants of each of the 6 "
        f"workflows sharing the models, shifting Zipf mix ({config.sim_skew}, reshuffled every "
        f"{config.real_var_phase_s} s), {config.real_var_duration_s} s per point (at least "
        f"{config.real_var_min_requests} requests)"
    )
    rat = ratios(var)
    return [
        xplib.Table(
            head + ": max rate and max CV at >= 90% SLO, real and the simulator's prediction",
            [
                "load",
                "variants",
                "mode",
                "max rate req/s",
                "simulated",
                "max CV",
                "simulated",
                "CV sweep at req/s",
                "P50 / P99 ms at max rate",
                "loads (all points)",
                "micro/mono rate, CV (simulated)",
            ],
            [
                [
                    s["load"],
                    s["variants"],
                    s["mode"],
                    round(s["max_rate"], 1),
                    round(s["sim_max_rate"], 1),
                    round(s["max_cv"], 2),
                    round(s["sim_max_cv"], 2),
                    round(s["cv_rate"], 1),
                    f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} (at {s['at_rate']:.1f})",
                    s["loads"],
                    "{:.2f}, {:.2f} ({:.2f}, {:.2f})".format(*rat[(s["load"], s["variants"])])
                    if s["mode"] == "micro"
                    else "",
                ]
                for s in var["summary"]
            ],
        ),
        xplib.Table(
            head + f": every bisection point vs the simulator (|attainment error| median "
            f"{var['sim_err']:.3f}, mean {var['sim_err_mean']:.3f})",
            [
                "load",
                "mode",
                "variants",
                "rate req/s",
                "CV",
                "SLO attainment",
                "P50 ms",
                "P99 ms",
                "429s",
                "simulated",
                "loads",
                "simulated loads",
            ],
            var["rows"],
        ),
    ]
