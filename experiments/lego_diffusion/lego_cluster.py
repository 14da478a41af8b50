"""Cluster-scale comparison in the discrete-event simulator with device memory limits.

Load times are measured here: each model's parameters are saved with orbax and restored
(the restore is what a device pays to bring a model in). Device memory is an assumption, so
it is swept in multiples of the largest workflow's parameter bytes (the least a monolithic
replica needs). The workload is Zipf-skewed over the workflows and its popularity is
reshuffled every `sim_phase_s` (the popular workflow changes), Gamma arrivals.
"""

import os
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

import diffusion_serve_jax as ds


def used_models(catalog):
    """Sorted names of the models the catalog's workflows run."""
    return sorted({n.model for w in catalog.workflows.values() for n in w.workflow.nodes})


def batch1_device_s(workflows, prof):
    """{workflow: device seconds of its nodes at the smallest bucket}: a request served alone."""
    return {
        w: sum(prof[cw.node(n).model][min(prof[cw.node(n).model])] for n in cw.order)
        for w, cw in workflows.items()
    }


def measure_load_times(catalog, workdir, repeats=3):
    """{model: (orbax restore seconds, device_put seconds)}, medians over `repeats`."""
    ckpt = ocp.StandardCheckpointer()
    out = {}
    for name in used_models(catalog):
        params = catalog.models[name].params
        path = os.path.join(os.path.abspath(workdir), "model_store", name)
        if not os.path.exists(path):
            ckpt.save(path, params)
            ckpt.wait_until_finished()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, params)
        host = jax.tree.map(np.asarray, params)
        restore, put = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(ckpt.restore(path, abstract))
            restore.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            jax.block_until_ready(jax.device_put(host))
            put.append(time.perf_counter() - t0)
        out[name] = (float(np.median(restore)), float(np.median(put)))
    ckpt.close()
    return out


def batch_policy(config, workflows, prof, device_s):
    """The profile-driven `ds.BatchPolicy` for `workflows` (name -> compiled workflow, its
    `cw.name` keying `device_s`): a request may spend `batch_delay_fraction` of its SLO slack,
    (slo_scale - 1) x its device time, waiting for fuller batches, split evenly over the
    queues it passes (each node's model in micro-serving, its one workflow queue in
    monolithic serving: both systems get the same budget per request); a model shared by
    several workflows takes the smallest share. None if `config.batching` is off."""
    if not config.batching:
        return None
    delays = {}
    for w, cw in workflows.items():
        slack = config.batch_delay_fraction * (config.slo_scale - 1.0) * device_s[cw.name]
        delays[w] = slack
        for n in cw.order:
            m = cw.node(n).model
            delays[m] = min(delays.get(m, slack), slack / len(cw.order))
    return ds.BatchPolicy(prof, max_delay_s=delays, cheap_ratio=config.batch_cheap_ratio)


def bisect_max(ok, lo, hi, iters):
    """Largest x in [lo, hi] (geometric bisection) with ok(x); 0 if not even ok(lo)."""
    if not ok(lo):
        return 0.0
    if ok(hi):
        return hi
    for _ in range(iters):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def batched_capacity(catalog, prof, num_workers):
    """Requests/s of `num_workers` devices when every node runs at its cheapest per-request
    bucket (on a GPU, where a batch costs about what one request does, far above the
    batch-1 estimate)."""
    per_req = [
        sum(min(t / b for b, t in prof[cw.node(n).model].items()) for n in cw.order)
        for cw in catalog.workflows.values()
    ]
    return num_workers / float(np.mean(per_req))


def memory_sweep(
    config, catalog, prof, device_s, load_s, *, sizes=None, capacity=None, time_scale=1.0
):
    """Max rate and max CV at >= 90% SLO for micro-serving and monolithic serving at each
    device-memory budget (`sim_memory`) and, at `sim_claim_memory`, for `sim_variants`
    copies of each workflow (variants that use the same models, as a production catalogue's
    many scene/LoRA/ControlNet pipelines share base models: monolithic serving holds a
    replica per variant, micro-serving one instance per model). The pinned monolithic
    baseline (a fixed equal share of replicas per workflow, all memory resident) is the
    simulator's earlier baseline.

    `sizes` (model bytes; default the catalog's), `capacity` (the req/s the rate range and
    the CV sweep's rate are multiples of; default from batch-1 `device_s`) and `time_scale`
    (multiplies the workload's duration and popularity phase) let a profile measured on
    another device (`load_node_profile`) drive the same sweep."""
    n = config.sim_workers
    if sizes is None:
        sizes = {m: catalog.models[m].param_bytes for m in load_s}
    key = jax.random.key(config.seed + 99)

    def setup(variants):
        wfs = {
            (w if variants == 1 else f"{w}#{v}"): cw
            for w, cw in catalog.workflows.items()
            for v in range(variants)
        }
        of = {w: {x.model for x in cw.workflow.nodes} for w, cw in wfs.items()}
        unit = max(sum(sizes[m] for m in ms) for ms in of.values())
        everything = sum(sizes[m] for ms in of.values() for m in ms)
        slo = {w: config.slo_scale * device_s[cw.name] for w, cw in wfs.items()}
        return wfs, unit, everything, slo, batch_policy(config, wfs, prof, device_s)

    base = setup(1)
    if capacity is None:
        capacity = n / float(np.mean(list(device_s.values())))
    cv_rate = config.sim_cv_rate_fraction * capacity

    def attainment(mode, mem, rate, cv, ctx):
        wfs, unit, everything, slo, policy = ctx
        arr = ds.shifting_mix(
            sorted(wfs),
            rate,
            config.sim_duration_s * time_scale,
            cv=cv,
            phase_s=config.sim_phase_s * time_scale,
            skew=config.sim_skew,
            key=key,
        )
        kw = {}
        if mem is not None:  # 0: every workflow replica fits (monolithic is still dynamic)
            kw = dict(memory_bytes=mem * unit or everything, model_bytes=sizes, load_s=load_s)
        lat, stats = ds.simulate(
            wfs,
            prof,
            arr,
            mode=mode,
            num_workers=n,
            max_batch=config.max_batch,
            slo_s=slo,
            queue_limit=config.queue_limit * n,
            batching=policy,
            with_stats=True,
            **kw,
        )
        return float(np.mean([lat[i] <= slo[w] for i, (_, w) in enumerate(arr)])), stats

    systems = [("monolithic (pinned)", "monolithic", None, 1)]
    systems += [(m, m, mem, 1) for mem in config.sim_memory for m in ("micro", "monolithic")]
    systems += [
        (m, m, config.sim_claim_memory, k)
        for k in config.sim_variants
        if k > 1
        for m in ("micro", "monolithic")
    ]
    rows = []
    for label, mode, mem, variants in systems:
        ctx = base if variants == 1 else setup(variants)
        loads = []

        def ok_rate(r, mode=mode, mem=mem, ctx=ctx, loads=loads):
            a, st = attainment(mode, mem, r, 1.0, ctx)
            loads.append(st["loads"])
            return a >= 0.9

        def ok_cv(c, mode=mode, mem=mem, ctx=ctx):
            return attainment(mode, mem, cv_rate, c, ctx)[0] >= 0.9

        lo, hi = config.sim_rate_range
        rate = bisect_max(ok_rate, lo * capacity, hi * capacity, config.sim_bisect)
        cv = bisect_max(ok_cv, config.sim_cv_range[0], config.sim_cv_range[1], config.sim_bisect)
        rows.append(
            {
                "system": label,
                "memory": mem,
                "variants": variants,
                "max_rate": rate,
                "max_cv": cv,
                "loads": int(np.median(loads)),
            }
        )
    return {
        "rows": rows,
        "unit_bytes": base[1],
        "capacity": capacity,
        "cv_rate": cv_rate,
        "time_scale": time_scale,
    }


def profile_sweep(config, catalog, path, cpu_capacity):
    """`memory_sweep` calibrated on a node profile file measured on another device (e.g. an
    H200 by `benchmarks/profile_nodes.py`): its per-node latencies, parameter bytes and load
    times. The rate range and the CV sweep's rate are multiples of the batched capacity (on a
    GPU a batch of 16 costs about one request), and the workload's duration and popularity
    phase are scaled so that a run holds as many requests as the CPU-calibrated sweep's at
    the same multiple (the simulation's cost stays the same). None if `path` is absent.
    With `config.batching` off this is the bucket-filling dispatch, which splits a queue of
    15 into batches of 4, 4, 4, 1, 1, 1 for other idle devices (cheap where a batch's cost
    grows with its rows, wasteful where a batch of 16 costs about one request)."""
    if not os.path.exists(path):
        return None
    p = ds.load_node_profile(path)
    used = used_models(catalog)
    missing = sorted(set(used) - set(p.latency_s))
    if missing:
        raise ValueError(f"{path}: models: no measurement for {missing}")
    prof = {m: p.latency_s[m] for m in used}
    device_s = batch1_device_s(catalog.workflows, prof)
    capacity = batched_capacity(catalog, prof, config.sim_workers)
    scale = cpu_capacity / capacity
    cl = memory_sweep(
        config,
        catalog,
        prof,
        device_s,
        {m: p.load_s[m] for m in used},
        sizes={m: p.param_bytes[m] for m in used},
        capacity=capacity,
        time_scale=scale,
    )
    phase = config.sim_phase_s * scale
    zoo_ok = all(p.meta.get("zoo", {}).get(k) == config[k] for k in ("width", "depth", "heads"))
    zoo_ok = zoo_ok and p.meta.get("zoo", {}).get("sample_steps") == config.sample_steps
    return cl | {
        "meta": p.meta,
        "path": path,
        "device_s": device_s,
        "phase_s": phase,
        "load_over_phase": float(np.mean([p.load_s[m] for m in used])) / phase,
        "same_zoo": zoo_ok,
        "batch16_over_1": {m: prof[m][max(prof[m])] / prof[m][min(prof[m])] for m in used},
    }


def by_point(rows):
    """Sweep rows keyed by (system, memory, variants)."""
    return {(r["system"], r["memory"], r["variants"]): r for r in rows}


def ratio_at(by, mem, what, variants=1):
    """micro / monolithic `what` (max_rate or max_cv) at one sweep point."""
    a, b = by[("micro", mem, variants)][what], by[("monolithic", mem, variants)][what]
    return a / b if b > 0 else float("inf")


def bucket_filling(config, sweep, *args):
    """The preregistered point (memory sim_claim_memory, 1 variant) under session 4's
    bucket-filling dispatch (no batching policy): the 'before' of the policy. `sweep` is
    `memory_sweep` or `profile_sweep`, called with (config, *args)."""
    claim_mem = config.sim_claim_memory
    one = ml_collections.ConfigDict(config.to_dict())
    one.sim_memory, one.sim_variants, one.batching = (claim_mem,), (1,), False
    rows = sweep(one, *args)["rows"]
    got = {r["system"]: r for r in rows if r["memory"] == claim_mem}
    b = got["monolithic"]["max_rate"]
    return got | {"rate_ratio": got["micro"]["max_rate"] / b if b > 0 else float("inf")}


def cpu_sweeps(config, catalog, prof, device_s, load_s):
    """The CPU-calibrated memory/variant sweep, its micro/mono ratios and the
    bucket-filling 'before' at the claim point."""
    cl = memory_sweep(config, catalog, prof, device_s, load_s)
    by = by_point(cl["rows"])
    mems, kvs = list(config.sim_memory), list(config.sim_variants)
    claim_mem = config.sim_claim_memory
    return {
        "cl": cl,
        "by": by,
        "pinned": by[("monolithic (pinned)", None, 1)],
        "rate": [ratio_at(by, m, "max_rate") for m in mems],
        "cv": [ratio_at(by, m, "max_cv") for m in mems],
        "var_rate": [ratio_at(by, claim_mem, "max_rate", k) for k in kvs],
        "var_cv": [ratio_at(by, claim_mem, "max_cv", k) for k in kvs],
        "before": bucket_filling(config, memory_sweep, catalog, prof, device_s, load_s)
        if config.sim_before
        else None,
    }


def gpu_sweeps(config, catalog, path, cpu_capacity):
    """(`profile_sweep` result, its ratios as `cpu_sweeps` gives them plus the claim-point
    ratios and the device kind), both None if the profile file at `path` is absent."""
    gcl = profile_sweep(config, catalog, path, cpu_capacity)
    if gcl is None:
        return None, None
    gby = by_point(gcl["rows"])
    mems, kvs = list(config.sim_memory), list(config.sim_variants)
    claim_mem = config.sim_claim_memory
    gpu = {
        "by": gby,
        "kind": gcl["meta"]["device_kind"],
        "rate": [ratio_at(gby, m, "max_rate") for m in mems],
        "cv": [ratio_at(gby, m, "max_cv") for m in mems],
        "var_rate": [ratio_at(gby, claim_mem, "max_rate", k) for k in kvs],
        "var_cv": [ratio_at(gby, claim_mem, "max_cv", k) for k in kvs],
        "claim_rate": ratio_at(gby, claim_mem, "max_rate"),
        "claim_cv": ratio_at(gby, claim_mem, "max_cv"),
        "before": bucket_filling(config, profile_sweep, catalog, path, cpu_capacity)
        if config.sim_before
        else None,
    }
    return gcl, gpu
