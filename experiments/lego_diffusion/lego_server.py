"""Real HTTP serving runs: micro-serving vs monolithic servers under open-loop load (a
Poisson rate sweep and a Gamma CV sweep over a trace-schema workload, all models resident),
each point replayed in the calibrated simulator beside it; `orbax_loader` is the real
model load of the memory-budget runs (`lego_variants`)."""

import os
import threading

import jax
import lego_cluster
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

import diffusion_serve_jax as ds
import xplib


def make_workload(rows, edges, lora_names):
    """Trace rows -> (workflow names, request body maker for the load generator)."""
    wfs = [ds.trace_to_workflow(r) for r in rows]

    def make(i):
        w = wfs[i]
        inputs = {"label": int(rows[i].scene_id.removeprefix("scene")) % 10, "seed": i}
        if w == "control_upscale":
            inputs["edges"] = edges[i % len(edges)].tolist()
        if w == "t2i_lora":  # the trace row's LoRA name -> the adapter's index in the node
            inputs["lora"] = list(lora_names).index(rows[i].loras[0])
        return {"workflow": w, "inputs": inputs}

    return wfs, make


async def warm_up(url, make_one, names):
    """Two unmeasured requests per workflow within 0.3 s, so that a fresh server's first
    measured point does not pay for connections, threads and caches."""
    await ds.run_open_loop(
        url,
        np.linspace(0, 0.3, 2 * len(names)),
        lambda i: make_one(names[i % len(names)], i),
    )


async def measure_standalone(url, make_one, workflows, repeats=5):
    """Median latency of each workflow alone (batch 1, idle server), through HTTP."""
    out = {}
    for w in workflows:
        lats = []
        for i in range(repeats):
            res = await ds.run_open_loop(url, [0.0], lambda _, w=w, i=i: make_one(w, i))
            lats.append(res[0].latency)
        out[w] = float(np.median(lats))
    return out


def summarize(outcomes, slo):
    """SLO attainment, latency percentiles and 429s of one real run."""
    lat = np.array([o.latency for o in outcomes])
    ok = lat[np.isfinite(lat)]
    return {
        "attainment": ds.slo_attainment(outcomes, slo),
        "p50_ms": 1000 * float(np.median(ok)) if ok.size else float("inf"),
        "p99_ms": 1000 * float(np.percentile(ok, 99)) if ok.size else float("inf"),
        "rejected": int(sum(o.status == 429 for o in outcomes)),
        "n": len(outcomes),
    }


def sim_attainment(lat, wfs, slo):
    """Share of simulated latencies `lat` (request order, workflows `wfs`) within SLO."""
    return float(np.mean([lat[i] <= slo[w] for i, w in enumerate(wfs)]))


def variants(config):
    """Served systems: name -> (mode, inline_below_s). The `(inline off)` pair runs every
    batch through the worker threads (no tiny batches inline on the event loop)."""
    out = {"micro": ("micro", 5e-4), "monolithic": ("monolithic", 5e-4)}
    if config.inline_off:
        out |= {
            "micro (inline off)": ("micro", 0.0),
            "monolithic (inline off)": ("monolithic", 0.0),
        }
    return out


def request_maker(config, edges):
    """(workflow, i) -> the i-th request body for that workflow (inputs vary with i)."""

    def make_one(w, i):
        inputs = {"label": i % 10, "seed": i}
        if w.split("#")[0] == "control_upscale":  # "#v": a variant of the workflow
            inputs["edges"] = edges[i % len(edges)].tolist()
        if w.split("#")[0] == "t2i_lora":
            inputs["lora"] = i % len(config.lora_names)
        return {"workflow": w, "inputs": inputs}

    return make_one


async def run_load(config, catalog, executors, edges, logger, load_s, workdir):
    """Both sweeps on the real servers, each point replayed in the simulator."""
    systems = variants(config)
    # per-bucket node profiles drive the batching policy (real server and simulator alike)
    prof = {m: ex.profile(repeats=3) for m, ex in executors.items()}
    device_s = lego_cluster.batch1_device_s(catalog.workflows, prof)
    policy = lego_cluster.batch_policy(config, catalog.workflows, prof, device_s)
    runtimes = {
        v: ds.ServingRuntime(
            catalog,
            mode=mode,
            num_workers=config.num_workers,
            max_batch=config.max_batch,
            queue_limit=config.queue_limit,
            executors=executors,
            inline_below_s=inline,
            batching=policy,
        )
        for v, (mode, inline) in systems.items()
    }
    servers = {v: await ds.serve(rt) for v, rt in runtimes.items()}
    names = sorted(catalog.workflows)

    make_one = request_maker(config, edges)
    for v in systems:
        await warm_up(servers[v].url, make_one, names)
    standalone = await measure_standalone(servers["micro"].url, make_one, sorted(catalog.workflows))
    slo = {w: config.slo_scale * t for w, t in standalone.items()}
    # capacity estimate: the device slots (cores) serving requests one at a time
    cores = min(os.cpu_count() or 1, config.num_workers)
    capacity = cores / float(np.mean(list(standalone.values())))
    overhead = max(0.0, float(np.median([standalone[w] - device_s[w] for w in standalone])))
    logging.info("standalone %s, capacity estimate %.1f req/s", standalone, capacity)
    rates = [f * capacity for f in config.rate_fractions]
    key = jax.random.key(config.seed + 7)
    rate_rows, cv_rows, sim_err = [], [], []
    results = {v: {"rate": [], "cv": []} for v in systems}
    step = 0
    cv_rate = None
    for sweep, xs in (("rate", rates), ("cv", list(config.cvs))):
        if sweep == "cv":  # burstiness at a rate both modes sustain when arrivals are Poisson
            mono_max = ds.max_load_at(
                rates, [p["attainment"] for p in results["monolithic"]["rate"]]
            )
            cv_rate = config.cv_rate_fraction * (mono_max if mono_max > 0 else rates[0])
        failing = {v: 0 for v in systems}
        # the CV sweep compares the two default systems only
        swept = list(systems) if sweep == "rate" else ["micro", "monolithic"]
        for xi, x in enumerate(xplib.progress(xs, desc=f"{sweep} sweep")):
            for m in swept:
                if failing[m] >= 2:  # two points below 50%: heavier load cannot recover
                    med = {
                        "attainment": 0.0,
                        "sim_attainment": float("nan"),
                        "p50_ms": float("nan"),
                        "p99_ms": float("nan"),
                        "rejected": -1,
                    }
                    results[m][sweep].append(med)
                    (rate_rows if sweep == "rate" else cv_rows).append(
                        [m, round(x, 2), 0.0, "not run", "-", "-", "-"]
                    )
                    continue
                reps = []
                for r in range(config.repeats):
                    k = jax.random.fold_in(jax.random.fold_in(key, xi * 100 + r), sweep == "cv")
                    rate = x if sweep == "rate" else cv_rate
                    cv = 1.0 if sweep == "rate" else x
                    rows = ds.synthetic_trace(
                        rate,
                        config.duration_s,
                        cv=cv,
                        loras=config.lora_names,
                        latent_share=config.latent_share,
                        key=k,
                    )
                    wfs, make = make_workload(rows, edges, config.lora_names)
                    times = [row.timestamp for row in rows]
                    outcomes = await ds.run_open_loop(servers[m].url, times, make)
                    s = summarize(outcomes, slo)
                    sim = ds.simulate(
                        catalog.workflows,
                        prof,
                        list(zip(times, wfs, strict=True)),
                        mode=systems[m][0],
                        num_workers=config.num_workers,
                        max_batch=config.max_batch,
                        slo_s=slo,
                        queue_limit=config.queue_limit,
                        cores=float(cores),
                        request_overhead_s=overhead,
                        batching=policy,
                    )
                    s["sim_attainment"] = sim_attainment(sim, wfs, slo)
                    reps.append(s)
                med = {k2: xplib.median_over(reps, k2) for k2 in reps[0]}
                results[m][sweep].append(med)
                failing[m] += med["attainment"] < 0.5
                sim_err.append(abs(med["sim_attainment"] - med["attainment"]))
                logger.log(step, sweep=sweep, x=x, mode=m, **med)
                step += 1
                row = [
                    m,
                    round(x, 2),
                    round(med["attainment"], 3),
                    round(med["sim_attainment"], 3),
                    round(med["p50_ms"], 1),
                    round(med["p99_ms"], 1),
                    int(med["rejected"]),
                ]
                (rate_rows if sweep == "rate" else cv_rows).append(row)
    for h in servers.values():
        await h.close()
    mem = {m: rt.memory_bytes() for m, rt in runtimes.items()}
    return dict(
        overhead=overhead,
        device_s=device_s,
        standalone=standalone,
        slo=slo,
        capacity=capacity,
        rates=rates,
        prof=prof,
        results=results,
        cv_rate=cv_rate,
        cores=cores,
        rate_rows=rate_rows,
        cv_rows=cv_rows,
        sim_err=sim_err,
        mem=mem,
    )


def orbax_loader(catalog, workdir):
    """model name -> its parameters restored from the model store (one restore at a time)."""
    ckpt = ocp.StandardCheckpointer()
    lock = threading.Lock()

    def load(name):
        path = os.path.join(os.path.abspath(workdir), "model_store", name)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, catalog.models[name].params)
        with lock:
            return jax.block_until_ready(ckpt.restore(path, abstract))

    return load


def max_loads(config, load):
    """Max rate (every served system) and max CV (the default pair) at >= 90% SLO."""
    res = load["results"]
    max_rate = {
        m: ds.max_load_at(load["rates"], [p["attainment"] for p in res[m]["rate"]]) for m in res
    }
    max_cv = {
        m: ds.max_load_at(list(config.cvs), [p["attainment"] for p in res[m]["cv"]])
        for m in ("micro", "monolithic")
    }
    return max_rate, max_cv
