"""EDGC reproduction at CPU scale: one GPT-2-style model, several gradient compressors, same run.

Every method trains the same model from the same initialisation on the same batches, data
parallel over 8 simulated devices (`jax.shard_map` over axis "dp"); the compressor runs per device
before the collective, so the bytes counted are the payloads that enter psum / all_gather.
"""

import json
import math
import pathlib
import time

import edgc_model
import edgc_multiprocess
import edgc_pipe
import edgc_scale
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax import P
from jax.sharding import NamedSharding

import grad_compress as gc
import xplib

EXPERIMENT = "edgc"
NETS = {"V100": gc.V100_CLUSTER, "H100": gc.H100_CLUSTER}


def make_compressor(method: str, config, leaves: int, stage_fn):
    """(compressor, ranks per leaf or None) for a method name."""
    start = int(config.start_fraction * config.steps)
    if method == "none":
        return gc.no_compression(), None
    if method.startswith("powersgd_r"):
        rank = int(method.removeprefix("powersgd_r"))
        comp = gc.powersgd(1, max_rank=config.max_rank, start_step=start)
        return comp, jnp.full((leaves,), rank, jnp.int32)
    if method == "topk":
        return gc.topk(config.topk_ratio), None
    if method == "edgc":
        comp = gc.edgc(
            num_stages=config.stages, stage_fn=stage_fn, **edgc_model.edgc_options(config, start)
        )
        return comp, None
    raise ValueError(f"methods: unknown method {method!r}")


def _shared_psgd(cache: dict, config, leaves: int):
    """All static-rank PowerSGD runs share one compressor (rank is a traced input): one compile."""
    if "psgd" not in cache:
        start = int(config.start_fraction * config.steps)
        cache["psgd"] = gc.powersgd(1, max_rank=config.max_rank, start_step=start)
    return cache["psgd"]


def local_step(graphdef, comp, optimizer, *, with_ranks: bool, axis_name: str | None):
    """One device's training step: grads -> compressed all-reduce over `axis_name` -> Adam.

    With `axis_name=None` the collectives are the identity: the same compute without transport.
    """

    def loss_fn(params, x, y):
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def local(params, opt_state, cstate, x, y, step, seed, ranks):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        key = jax.random.fold_in(jax.random.key(seed), step)
        kw = {"ranks": ranks} if with_ranks else {}
        grads, cstate, stats = comp.update(grads, cstate, key=key, axis_name=axis_name, **kw)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        extras = (
            (cstate.controller.ranks, cstate.bits)
            if isinstance(cstate, gc.EDGCState)
            else (jnp.zeros((0,), jnp.int32), jnp.zeros((0,)))
        )
        if axis_name is not None:
            loss = jax.lax.pmean(loss, axis_name)
        return params, opt_state, cstate, loss, stats, extras

    return local


def build_step(graphdef, comp, optimizer, mesh, *, with_ranks: bool):
    """The data-parallel step over mesh axis "dp" (any mesh: simulated devices or processes)."""
    per_device = local_step(graphdef, comp, optimizer, with_ranks=with_ranks, axis_name="dp")

    def local(params, opt_state, cstate, x, y, step, seed, ranks):
        cstate = jax.tree.map(lambda a: a[0], cstate)
        params, opt_state, cstate, loss, stats, extras = per_device(
            params, opt_state, cstate, x, y, step, seed, ranks
        )
        return params, opt_state, jax.tree.map(lambda a: a[None], cstate), loss, stats, extras

    step_fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(), P(), P("dp"), P("dp"), P("dp"), P(), P(), P()),
        out_specs=(P(), P(), P("dp"), P(), P(), P()),
        check_vma=False,
    )
    return jax.jit(step_fn), _eval_fn(graphdef)


_EVAL_CACHE: dict = {}


def _eval_fn(graphdef):
    """One jitted validation loss per model structure, shared by every method."""
    if graphdef not in _EVAL_CACHE:

        def loss_fn(params, x, y):
            logits = nnx.merge(graphdef, params)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        _EVAL_CACHE[graphdef] = jax.jit(loss_fn)
    return _EVAL_CACHE[graphdef]


def _flat(tree) -> dict:
    """Leaves by zero-padded index (orbax cannot store zero-size arrays; those are skipped)."""
    return {f"{i:05d}": x for i, x in enumerate(jax.tree.leaves(tree)) if x.size}


def _unflat(flat: dict, like):
    leaves = jax.tree.leaves(like)
    restored = [flat.get(f"{i:05d}", x) for i, x in enumerate(leaves)]
    return jax.tree.unflatten(jax.tree.structure(like), restored)


def run_one(method: str, seed: int, config, data, workdir: pathlib.Path, mesh, cache) -> dict:
    train_data, val_data = data
    if ("init", seed) not in cache:  # every method starts from the same initialisation
        model = edgc_model.GPT(
            vocab=256,
            dim=config.dim,
            heads=config.heads,
            layers=config.layers,
            seq=config.seq,
            rngs=nnx.Rngs(seed),
        )
        cache[("init", seed)] = nnx.split(model, nnx.Param)
    graphdef, params = cache[("init", seed)]
    leaves = len(jax.tree.leaves(params))
    stage_fn = lambda path, shape: edgc_model.stage_of(
        path, shape, layers=config.layers, stages=config.stages
    )
    comp, ranks = make_compressor(method, config, leaves, stage_fn)
    if method.startswith("powersgd_r"):
        comp = _shared_psgd(cache, config, leaves)
    optimizer = optax.adam(config.learning_rate)
    # one compiled step per method, shared by every seed (same structure, same compressor config)
    key = (method if not method.startswith("powersgd") else "psgd", "step")
    if key not in cache:
        cache[key] = build_step(graphdef, comp, optimizer, mesh, with_ranks=ranks is not None)
    step_fn, loss_fn = cache[key]
    with_ranks = ranks if ranks is not None else jnp.zeros((leaves,), jnp.int32)

    rep, dp = NamedSharding(mesh, P()), NamedSharding(mesh, P("dp"))
    opt_state = optimizer.init(params)
    if ("init_fn", key) not in cache:
        cache[("init_fn", key)] = jax.jit(comp.init)
    cstate = cache[("init_fn", key)](params)
    cstate = jax.tree.map(lambda a: jnp.broadcast_to(a, (config.devices,) + a.shape), cstate)
    params, opt_state = jax.device_put((params, opt_state), rep)
    cstate = jax.device_put(cstate, dp)
    steps = config.steps
    hist = {
        "loss": np.full(steps, np.nan, np.float32),
        "bytes": np.zeros(steps, np.float32),
        "comm_V100": np.zeros(steps, np.float32),
        "comm_H100": np.zeros(steps, np.float32),
        "ranks": np.zeros((steps, config.stages), np.float32),
        "bits": np.zeros((steps, config.stages), np.float32),
        "val": np.full(steps, np.nan, np.float32),
    }
    mngr = xplib.checkpoint_manager(workdir / "runs" / f"{method}_s{seed}", max_to_keep=1)
    start = 0
    if mngr.latest_step() is not None:
        target = {"state": _flat((params, opt_state, cstate)), "hist": hist}
        restored = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(target))
        params, opt_state, cstate = _unflat(restored["state"], (params, opt_state, cstate))
        hist = {k: np.asarray(v) for k, v in restored["hist"].items()}
        start = mngr.latest_step()

    val_batches = list(_val_batches(val_data, config))
    batch = config.batch_per_device * config.devices
    t0 = time.time()
    static_rank = float(np.asarray(ranks)[0]) if ranks is not None else 0.0
    pending = []  # device results, fetched in one go at eval / checkpoint steps (no per-step sync)

    def flush():
        for step_i, (loss, stats, r, b) in jax.device_get(pending):
            hist["loss"][step_i] = loss
            hist["bytes"][step_i] = stats.total_bytes
            for name, net in NETS.items():
                hist[f"comm_{name}"][step_i] = gc.comm_time(stats, config.devices, net)
            hist["ranks"][step_i] = r if r.size else static_rank
            if b.size:
                hist["bits"][step_i] = b
        pending.clear()

    for step in xplib.progress(range(start, steps), total=steps - start, desc=f"{method} s{seed}"):
        rng = np.random.default_rng((seed, step))
        starts = rng.integers(0, train_data.shape[0] - config.seq - 1, size=batch)
        win = train_data[starts[:, None] + np.arange(config.seq + 1)[None, :]]
        x, y = jax.device_put((win[:, :-1], win[:, 1:]), dp)
        params, opt_state, cstate, loss, stats, (r, b) = step_fn(
            params, opt_state, cstate, x, y, jnp.int32(step), jnp.int32(seed), with_ranks
        )
        pending.append((step, (loss, stats, r, b)))
        if (step + 1) % config.eval_every == 0 or step + 1 == steps:
            flush()
            hist["val"][step] = float(
                np.mean([float(loss_fn(params, vx, vy)) for vx, vy in val_batches])
            )
        if (step + 1) % config.ckpt_every == 0 or step + 1 == steps:
            flush()
            payload = {"state": _flat((params, opt_state, cstate)), "hist": hist}
            mngr.save(step + 1, args=ocp.args.StandardSave(payload))
    flush()
    mngr.wait_until_finished()
    return {"method": method, "seed": seed, "seconds": time.time() - t0, **hist}


def _val_batches(val_data, config):
    rng = np.random.default_rng(1234)
    for _ in range(config.eval_batches):
        starts = rng.integers(0, val_data.shape[0] - config.seq - 1, size=16)
        win = val_data[starts[:, None] + np.arange(config.seq + 1)[None, :]]
        yield jnp.asarray(win[:, :-1]), jnp.asarray(win[:, 1:])


def summarise(runs: list[dict], config) -> dict[str, dict]:
    start = int(config.start_fraction * config.steps)
    out = {}
    for method in config.methods:
        rs = [r for r in runs if r["method"] == method]
        per = []
        for r in rs:
            per.append(
                {
                    "val": float(r["val"][-1]),
                    "bytes": float(np.mean(r["bytes"][start:])),
                    "comm_V100": float(np.mean(r["comm_V100"][start:])),
                    "comm_H100": float(np.mean(r["comm_H100"][start:])),
                    "rank": [float(x) for x in np.mean(r["ranks"][start:], axis=0)],
                    "seconds": r["seconds"],
                }
            )
        out[method] = {
            k: xplib.median_over(per, k)
            for k in ("val", "bytes", "comm_V100", "comm_H100", "seconds")
        }
        out[method]["rank"] = [
            float(np.median([p["rank"][s] for p in per])) for s in range(config.stages)
        ]
    return out


def figures(runs, config, workdir) -> list[str]:
    names = []
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for method in config.methods:
        r = next(r for r in runs if r["method"] == method)
        steps = np.nonzero(np.isfinite(r["val"]))[0]
        ax[0].plot(steps + 1, r["val"][steps], marker="o", label=method)
        ax[1].plot(np.arange(config.steps) + 1, r["bytes"] / 1e3, label=method)
    ax[0].set(xlabel="step", ylabel="validation loss (nats/byte)", title="Validation loss (seed 0)")
    ax[1].set(
        xlabel="step", ylabel="kB sent per device per step", yscale="log", title="Bytes per step"
    )
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=7)
    names.append(xplib.save_figure(fig, workdir, "loss_and_bytes"))
    if "edgc" in config.methods:
        r = next(r for r in runs if r["method"] == "edgc")
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        for s in range(config.stages):
            ax[0].plot(np.arange(config.steps) + 1, r["ranks"][:, s], label=f"stage {s}")
            mask = r["bits"][:, s] > 0
            ax[1].plot(np.nonzero(mask)[0] + 1, r["bits"][mask, s], label=f"stage {s}")
        ax[0].set(xlabel="step", ylabel="rank", title="EDGC rank per stage")
        ax[1].set(xlabel="step", ylabel="entropy (bits, fixed bins)", title="Gradient entropy")
        ax[0].legend()
        ax[1].legend()
        names.append(xplib.save_figure(fig, workdir, "edgc_rank_entropy"))
    return names


def train_and_evaluate(config, workdir: str) -> None:
    workdir = pathlib.Path(workdir)
    if len(jax.devices()) < config.devices:
        raise ValueError(f"devices: need {config.devices} devices, found {len(jax.devices())}")
    tokens = edgc_model.load_text_bytes()
    split = int(0.9 * tokens.shape[0])
    data = (tokens[:split], tokens[split:])
    mesh = jax.make_mesh((config.devices,), ("dp",), devices=jax.devices()[: config.devices])
    logger = xplib.MetricLogger(workdir)
    cache: dict = {}
    runs = []
    for seed in config.seeds:
        for method in config.methods:
            r = run_one(method, seed, config, data, workdir, mesh, cache)
            runs.append(r)
            logger.log(
                config.steps,
                method=method,
                seed=seed,
                val_loss=r["val"][-1],
                bytes_per_step=float(np.mean(r["bytes"])),
                seconds=r["seconds"],
            )
    pipe_runs = []
    for seed in config.pipe_seeds:
        for method in config.pipe_methods:
            r = edgc_pipe.run(method, seed, config, data, workdir, cache)
            pipe_runs.append(r)
            logger.log(
                config.steps,
                method=f"pipeline_{method}",
                seed=seed,
                val_loss=r["val"][-1],
                seconds=r["seconds"],
            )
    multi = None
    if config.mp_methods:  # the same GPT step across real processes (gloo over loopback)
        path = workdir / "multiprocess.json"
        if path.exists():  # resume: the multi-process stage already ran
            multi = json.loads(path.read_text())
        else:
            multi = edgc_multiprocess.launch(config, str(workdir / "multiprocess_run.json"))
            path.write_text(json.dumps(multi, indent=1))
        for r in multi["rows"]:
            logger.log(
                config.mp_steps,
                method=f"multiprocess_{r['method']}",
                val_loss=r["val"],
                measured_comm_ms=r["measured_comm_ms"],
            )
    summary = summarise(runs, config)
    write(summary, runs, config, workdir, pipe_runs, multi)


def multiprocess_results(multi, config):
    """Table + claim for the run across real processes (measured beside modelled comm time)."""
    rows = [
        [
            r["method"],
            round(r["losses"][0], 4),
            round(r["losses"][-1], 4),
            round(r["val"], 4),
            round(r["bytes"] / 1e3, 2),
            round(r["local_ms"], 2),
            round(r["dist_ms"], 2),
            round(r["measured_comm_ms"], 2),
            round(r["modelled_loopback_ms"], 3),
            round(r["modelled_V100_ms"], 4),
        ]
        for r in multi["rows"]
    ]
    lb = multi["loopback"]
    table = xplib.Table(
        f"Multi-process: {multi['processes']} processes on this machine, jax.distributed + gloo "
        f"over TCP loopback, the same GPT step for {config.mp_steps} steps (seed "
        f"{config.seeds[0]}, {config.batch_per_device} sequences per process). Measured comm = "
        f"median step with the collective - median of the same step without it "
        f"({config.mp_reps} repeats each). Loopback alpha-beta fitted from two psums: "
        f"{lb['latency_us']:.0f} us, {lb['bandwidth_GB_per_s']:.2f} GB/s",
        [
            "method",
            "train loss step 1",
            f"train loss step {config.mp_steps}",
            "final val loss",
            "kB/step/process",
            "compute-only ms",
            "step with collective ms",
            "measured comm ms",
            "modelled comm ms (loopback fit)",
            "modelled comm ms (V100 net)",
        ],
        rows,
    )
    by = {r["method"]: r for r in multi["rows"]}
    ours, base = by.get("edgc", by["none"]), by["none"]
    claim = xplib.Claim(
        "Across real processes (gloo, loopback): communication time measured on the transport",
        "measured comm ms/step (2 processes)",
        round(ours["measured_comm_ms"], 2),
        round(base["measured_comm_ms"], 2),
        "-46.45% communication latency (GPT2-2.5B, 32 V100)",
        "uncompressed",
        "lower",
    )
    return table, claim


def write(summary, runs, config, workdir, pipe_runs=(), multi=None) -> None:
    base, ours = summary["none"], summary.get("edgc")
    rows = []
    for method, s in summary.items():
        rows.append(
            [
                method,
                round(s["val"], 4),
                round(100 * (s["val"] / base["val"] - 1), 2),
                round(s["bytes"] / 1e3, 2),
                round(base["bytes"] / s["bytes"], 1),
                round(1e3 * s["comm_V100"], 4),
                round(1e3 * s["comm_H100"], 4),
                " / ".join(f"{x:.2f}" for x in s["rank"]),
            ]
        )
    tables = [
        xplib.Table(
            f"All methods, {config.devices} data-parallel workers, medians over seeds "
            f"{list(config.seeds)}"
            f" (bytes and comm time averaged after the {config.start_fraction:.0%} warm-up)",
            [
                "method",
                "final val loss",
                "vs none %",
                "kB/step/device",
                "compression x",
                "modelled comm ms (V100 net)",
                "modelled comm ms (H100 net)",
                "mean rank per stage",
            ],
            rows,
        )
    ]
    claims = []
    if ours is not None:
        scale_rows, scale = [], {}
        for setup in edgc_scale.SETUPS:
            t_none = edgc_scale.step_time(setup, [None] * setup.pp)
            t_ours = edgc_scale.step_time(setup, edgc_scale.map_ranks(ours["rank"], setup))
            scale[setup.name] = (t_none, t_ours)
            scale_rows.append(
                [
                    setup.name,
                    round(1e3 * t_none["dp_comm"], 2),
                    round(1e3 * t_ours["dp_comm"], 2),
                    round(100 * (t_ours["dp_comm"] / t_none["dp_comm"] - 1), 2),
                    round(t_none["total"], 4),
                    round(t_ours["total"], 4),
                    round(100 * (t_ours["total"] / t_none["total"] - 1), 2),
                ]
            )
        tables.append(
            xplib.Table(
                "Paper-scale alpha-beta model with EDGC's measured mean rank per stage "
                "(assumptions in experiments/edgc/edgc_scale.py)",
                [
                    "setup",
                    "DP comm ms none",
                    "DP comm ms EDGC",
                    "comm change %",
                    "step s none",
                    "step s EDGC",
                    "step time change %",
                ],
                scale_rows,
            )
        )
        v100 = scale[edgc_scale.SETUPS[0].name]
        claims = [
            xplib.Claim(
                "EDGC cuts gradient communication volume (measured payload bytes)",
                "kB/step/device",
                round(ours["bytes"] / 1e3, 2),
                round(base["bytes"] / 1e3, 2),
                "compression reduces the volume behind the -46.45% latency",
                "uncompressed",
                "lower",
            ),
            xplib.Claim(
                "EDGC cuts communication latency at paper scale (alpha-beta, our ranks)",
                "DP comm ms/step, GPT2-2.5B, 32 V100",
                round(1e3 * v100[1]["dp_comm"], 3),
                round(1e3 * v100[0]["dp_comm"], 3),
                "-46.45% communication latency (GPT2-2.5B, 32 V100)",
                "uncompressed",
                "lower",
            ),
            xplib.Claim(
                "EDGC cuts training time at paper scale (modelled)",
                "s/step, GPT2-2.5B, 32 V100",
                round(v100[1]["total"], 4),
                round(v100[0]["total"], 4),
                "-16.13% training time",
                "uncompressed",
                "lower",
            ),
            xplib.Claim(
                f"EDGC preserves accuracy (tolerance {config.loss_tolerance:.0%})",
                "final val loss",
                round(ours["val"], 4),
                round(base["val"], 4),
                "accuracy preserved (perplexity matches the uncompressed baseline)",
                "uncompressed",
                "lower",
            ),
        ]
        if "powersgd_r4" in summary:
            claims.append(
                xplib.Claim(
                    "EDGC vs static PowerSGD rank 4: bytes",
                    "kB/step/device",
                    round(ours["bytes"] / 1e3, 2),
                    round(summary["powersgd_r4"]["bytes"] / 1e3, 2),
                    "dynamic rank beats static PowerSGD at equal accuracy",
                    "PowerSGD r=4",
                    "lower",
                )
            )
    else:
        claims = [xplib.Claim("no EDGC run", "val", math.nan, base["val"], "-", "uncompressed")]
    if pipe_runs:
        pipe_table, pipe_claim = pipeline_results(pipe_runs, config)
        tables.append(pipe_table)
        claims.append(pipe_claim)
    if multi:
        mp_table, mp_claim = multiprocess_results(multi, config)
        tables.append(mp_table)
        claims.append(mp_claim)
    within = ours is not None and ours["val"] <= base["val"] * (1 + config.loss_tolerance)
    notes = (
        f"Loss tolerance {config.loss_tolerance:.0%} of the uncompressed final validation loss: "
        f"EDGC {'within' if within else 'OUTSIDE'} tolerance (EDGC rank floor "
        f"{config.min_rank}). Communication times of the 8-device runs are alpha-beta "
        "model outputs from the exact bytes each device handed to psum/all_gather (simulated CPU "
        "devices have no network); the multi-process table measures them on a real transport "
        "(2 processes, gloo over TCP loopback). At this toy scale (<1 MB of gradient) the "
        "per-message latency dominates, so every compressor's extra messages (P, Q, entropy) "
        "make the modelled time longer than one uncompressed bucket even though the bytes fall; "
        "the paper-scale table applies EDGC's measured per-stage ranks to GPT2-2.5B / "
        "GPT2-12.1B shapes. Training is "
        f"data parallel in the main table, with parameters grouped into {config.stages} stages "
        "for EDGC's per-stage ranks; the pipeline table trains a GPipe pipeline "
        f"({config.devices // config.pp} dp x {config.pp} pp, ppermute between stages, "
        f"{config.micro} micro-batches) where each stage has its own EDGC rank and the "
        "inter-stage activations / activation gradients are low-rank at an entropy-driven rank "
        f"(seeds {list(config.pipe_seeds)})."
    )
    figs = figures(runs, config, workdir)
    if pipe_runs:
        figs.append(pipeline_figure(pipe_runs, config, workdir))
    xplib.write_results(
        workdir,
        experiment=EXPERIMENT,
        paper="EDGC (arXiv 2511.10333)",
        preset=config.preset,
        claims=claims,
        tables=tables,
        figures=figs,
        notes=notes,
        extra={"summary": summary},
    )


def _pipe_summary(pipe_runs, config) -> dict[str, dict]:
    start = int(config.start_fraction * config.steps)
    out = {}
    for method in config.pipe_methods:
        per = [
            {
                "val": float(r["val"][-1]),
                "dp": float(np.mean(r["dp_bytes"][start:])),
                "p2p": float(np.mean(r["p2p_bytes"][start:])),
                "rank": np.mean(r["ranks"][start:], axis=0),
                "link": np.mean(r["link_ranks"][start:, :-1], axis=0),
            }
            for r in pipe_runs
            if r["method"] == method
        ]
        out[method] = {k: xplib.median_over(per, k) for k in ("val", "dp", "p2p")}
        out[method]["rank"] = np.median([p["rank"] for p in per], axis=0).tolist()
        out[method]["link"] = np.median([p["link"] for p in per], axis=0).tolist()
    return out


def pipeline_results(pipe_runs, config):
    """Table + claim for the dp x pp pipeline runs (bytes per data-parallel replica per step)."""
    summ = _pipe_summary(pipe_runs, config)
    base = summ["none"]
    rows = []
    for method, s in summ.items():
        total = s["dp"] + s["p2p"]
        rows.append(
            [
                f"pipeline {method}",
                round(s["val"], 4),
                round(100 * (s["val"] / base["val"] - 1), 2),
                round(s["dp"] / 1e3, 2),
                round(s["p2p"] / 1e3, 2),
                round(100 * (total / (base["dp"] + base["p2p"]) - 1), 2),
                " / ".join(f"{x:.2f}" for x in s["rank"]) if method != "none" else "-",
                " / ".join(f"{x:.1f}" for x in s["link"]) if method != "none" else "-",
            ]
        )
    table = xplib.Table(
        f"Pipeline mode: {config.devices // config.pp} dp x {config.pp} pp GPipe "
        f"({config.micro} micro-batches, {config.pipe_layers} blocks), per data-parallel replica",
        [
            "method",
            "final val loss",
            "vs none %",
            "DP gradient kB/step",
            "inter-stage kB/step (act + grad)",
            "total bytes change %",
            "mean grad rank per stage",
            f"mean link rank per boundary (of {config.dim})",
        ],
        rows,
    )
    ours = summ.get("edgc", base)
    claim = xplib.Claim(
        "Pipeline mode: EDGC (per-stage gradient ranks + low-rank links) cuts total traffic",
        "kB/step per dp replica (DP + inter-stage)",
        round((ours["dp"] + ours["p2p"]) / 1e3, 2),
        round((base["dp"] + base["p2p"]) / 1e3, 2),
        "-46.45% communication latency (GPT2-2.5B, 32 V100, DP x PP)",
        "uncompressed pipeline",
        "lower",
    )
    return table, claim


def pipeline_figure(pipe_runs, config, workdir) -> str:
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for r in pipe_runs:
        if r["seed"] != config.pipe_seeds[0]:
            continue
        steps = np.nonzero(np.isfinite(r["val"]))[0]
        ax[0].plot(steps + 1, r["val"][steps], marker="o", label=f"pipeline {r['method']}")
        if r["method"] != "none":
            t = np.arange(config.steps) + 1
            for s in range(config.pp):
                ax[1].plot(t, r["ranks"][:, s], label=f"grad rank, stage {s}")
            for s in range(config.pp - 1):
                ax[1].plot(t, r["link_ranks"][:, s], "--", label=f"link rank, {s}->{s + 1}")
    ax[0].set(xlabel="step", ylabel="validation loss", title="Pipeline mode: validation loss")
    ax[1].set(xlabel="step", ylabel="rank", yscale="log", title="EDGC ranks (pipeline mode)")
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=7)
    return xplib.save_figure(fig, workdir, "pipeline_ranks")
