"""Pipeline mode of the EDGC experiment: data parallel x GPipe pipeline on a 2-D device mesh.

The GPT's blocks are split into `pp` stages of equal depth (stage parameters stacked along the
"pp" mesh axis); the embeddings, final norm and head are kept on every pipeline device (stage 0
uses the embeddings, the last stage the head; their gradients are summed over "pp"). Each step:
GPipe forward/backward over "pp" (`gc.gpipe`, activations and activation gradients via
`ppermute`), then each stage compresses its own gradients before the data-parallel all-reduce
over "dp" (EDGC's rank per pipeline stage), and with EDGC the inter-stage links are low-rank
at a rank set per boundary by `gc.link_controller` from the activations' entropy.

The pipeline stage alone (the same runs as in `main.py`, printed, not written to a report):

    python experiments/edgc/edgc_pipe.py --preset=small --workdir=/tmp/edgc_pipe

The links send a boundary's activation as is where its rank-r factors would be as many bytes or
more (`gc.gpipe(raw_when_cheaper=True)`: ranks >= 32 of 64 in `small`, i.e. the full-rank links of
the warm-up); `--raw_when_cheaper=0` (config key `link_raw_when_cheaper`) sends factors at every
rank, as before session 11.
"""

import argparse
import os
import pathlib
import time

import edgc_model
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax import P
from jax.sharding import NamedSharding

import grad_compress as gc
import xplib


def split_model(model: edgc_model.GPT, stages: int):
    """(graphdefs, shared params, stage params: a tuple of blocks, stacked over stages)."""
    layers = len(model.blocks)
    if layers % stages:
        raise ValueError(f"layers: expected a multiple of pp={stages}, got {layers}")
    per = layers // stages
    gds, shared = {}, {}
    for name in ("tok", "ln", "head"):
        gds[name], shared[name] = nnx.split(getattr(model, name), nnx.Param)
    shared["pos"] = model.pos[...]
    block_states = []
    for blk in model.blocks:
        gds["block"], st = nnx.split(blk, nnx.Param)
        block_states.append(nnx.to_pure_dict(st))
    stage = [tuple(block_states[s * per : (s + 1) * per]) for s in range(stages)]
    shared = {k: (nnx.to_pure_dict(v) if k != "pos" else v) for k, v in shared.items()}
    return gds, shared, jax.tree.map(lambda *xs: jnp.stack(xs), *stage)


def make_fns(gds):
    def embed(shared, tokens):
        tok = nnx.merge(gds["tok"], shared["tok"])
        return tok(tokens) + shared["pos"][None, : tokens.shape[1]]

    def head(shared, h):
        ln = nnx.merge(gds["ln"], shared["ln"])
        lin = nnx.merge(gds["head"], shared["head"])
        return lin(ln(h))

    def stage_fn(stage, h):
        for block in stage:
            h = nnx.merge(gds["block"], block)(h)
        return h

    return embed, head, stage_fn


def _ce(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def build(config, gds, method: str, start: int, mesh):
    """The jitted dp x pp train step and the (unpipelined) validation loss for one method."""
    pp, micro = config.pp, config.micro
    embed, head, stage_fn = make_fns(gds)
    optimizer = optax.adam(config.learning_rate)
    if method == "none":
        comp_stage = comp_shared = gc.no_compression()
    else:
        kw = edgc_model.edgc_options(config, start)
        comp_stage, comp_shared = gc.edgc(**kw), gc.edgc(**kw)
    links = method == "edgc"
    raw_when_cheaper = bool(config.get("link_raw_when_cheaper", True))
    link_ctrl = gc.link_controller(
        config.pipe_batch // micro * config.seq,
        config.dim,
        stages=pp,
        init_rank=config.link_init_rank,
        min_rank=config.link_min_rank,
        max_rank=config.dim,
        window=config.window,
        warmup=start,
        hysteresis_bits=config.hysteresis_bits,
    )

    def local(shared, stage, opt, cs, link, x, y, step, seed):
        stage = jax.tree.map(lambda a: a[0], stage)
        opt_sh, opt_st = opt[0], jax.tree.map(lambda a: a[0], opt[1])
        cs_sh, cs_st = jax.tree.map(lambda a: a[0, 0], cs)
        s = jax.lax.axis_index("pp")
        ranks = jnp.where(step >= start, link["ctrl"].ranks, config.dim) if links else None

        def loss_fn(shared, stage):
            h = embed(shared, x).reshape(micro, -1, config.seq, config.dim)
            out, pst = gc.gpipe(
                stage_fn,
                stage,
                h,
                axis_name="pp",
                ranks=ranks,
                max_rank=config.dim if links else None,
                raw_when_cheaper=raw_when_cheaper,
                entropy_scale=link["scale"][s],
            )
            loss = _ce(head(shared, out), y.reshape(micro, -1, config.seq))
            return jnp.where(s == pp - 1, loss, 0.0), pst

        (loss, pst), (g_sh, g_st) = jax.value_and_grad(loss_fn, (0, 1), has_aux=True)(shared, stage)
        g_sh = jax.lax.psum(g_sh, "pp")
        key = jax.random.fold_in(jax.random.key(seed), step)
        g_sh, cs_sh, st_sh = comp_shared.update(g_sh, cs_sh, key=key, axis_name="dp")
        g_st, cs_st, st_st = comp_stage.update(
            g_st, cs_st, key=jax.random.fold_in(key, 1 + s), axis_name="dp"
        )
        up, opt_sh = optimizer.update(g_sh, opt_sh, shared)
        shared = optax.apply_updates(shared, up)
        up, opt_st = optimizer.update(g_st, opt_st, stage)
        stage = optax.apply_updates(stage, up)
        # link entropy: every stage's, averaged over dp, drives the per-boundary rank
        bits = jax.lax.pmean(jax.lax.all_gather(pst.bits, "pp"), "dp")
        std = jax.lax.pmean(jax.lax.all_gather(pst.std, "pp"), "dp")
        scale = jnp.where(link["scale"] > 0, link["scale"], std)
        link = {"ctrl": link_ctrl.update(link["ctrl"], bits, step >= start), "scale": scale}
        # one dp replica's traffic: its stage's gradient + the shared gradient once per replica
        dp_bytes = jax.lax.psum(st_st.total_bytes, "pp") + st_sh.total_bytes
        p2p = jax.lax.psum(pst.p2p_bytes, "pp")
        stage_rank = cs_st.controller.ranks[0] if isinstance(cs_st, gc.EDGCState) else jnp.int32(0)
        out = {
            "loss": jax.lax.pmean(jax.lax.psum(loss, "pp"), "dp"),
            "dp_bytes": dp_bytes,
            "p2p_bytes": p2p,
            "stage_rank": jax.lax.all_gather(stage_rank, "pp"),
            "link_rank": ranks if links else jnp.zeros((pp,), jnp.int32),  # as used
            "link_bits": bits,
        }
        cs = jax.tree.map(lambda a: a[None, None], (cs_sh, cs_st))
        stage = jax.tree.map(lambda a: a[None], stage)
        opt = (opt_sh, jax.tree.map(lambda a: a[None], opt_st))
        return shared, stage, opt, cs, link, out

    specs = (P(), P("pp"), (P(), P("pp")), P("dp", "pp"), P(), P("dp"), P("dp"), P(), P())
    step_fn = jax.jit(
        jax.shard_map(
            local,
            mesh=mesh,
            in_specs=specs,
            out_specs=(P(), P("pp"), (P(), P("pp")), P("dp", "pp"), P(), P()),
            check_vma=False,
        )
    )

    def val_loss(shared, stages, x, y):
        h = embed(shared, x)
        for s in range(pp):
            h = stage_fn(jax.tree.map(lambda a, s=s: a[s], stages), h)
        return _ce(head(shared, h), y)

    return step_fn, jax.jit(val_loss), optimizer, (comp_shared, comp_stage), link_ctrl


def run(method: str, seed: int, config, data, workdir: pathlib.Path, cache: dict) -> dict:
    """Train one method on the dp x pp mesh; returns its per-step history."""
    train_data, val_data = data
    dp, pp = config.devices // config.pp, config.pp
    mesh = jax.make_mesh((dp, pp), ("dp", "pp"), devices=jax.devices()[: config.devices])
    start = int(config.start_fraction * config.steps)
    model = edgc_model.GPT(
        vocab=256,
        dim=config.dim,
        heads=config.heads,
        layers=config.pipe_layers,
        seq=config.seq,
        rngs=nnx.Rngs(seed),
    )
    gds, shared, stages = split_model(model, pp)
    if (method, "pipe") not in cache:
        cache[(method, "pipe")] = build(config, gds, method, start, mesh)
    step_fn, val_fn, optimizer, (comp_sh, comp_st), link_ctrl = cache[(method, "pipe")]
    stage0 = jax.tree.map(lambda a: a[0], stages)
    cs = (comp_sh.init(shared), comp_st.init(stage0))
    cs = jax.tree.map(lambda a: jnp.broadcast_to(a, (dp, pp) + a.shape), cs)
    opt = (optimizer.init(shared), jax.vmap(optimizer.init)(stages))
    link = {"ctrl": link_ctrl.init(), "scale": jnp.zeros((pp,), jnp.float32)}

    def put(tree, spec):
        return jax.device_put(tree, NamedSharding(mesh, spec))

    state = [
        put(shared, P()),
        put(stages, P("pp")),
        (put(opt[0], P()), put(opt[1], P("pp"))),
        put(cs, P("dp", "pp")),
        put(link, P()),
    ]
    steps = config.steps
    hist = {
        "loss": np.full(steps, np.nan, np.float32),
        "val": np.full(steps, np.nan, np.float32),
        "dp_bytes": np.zeros(steps, np.float32),
        "p2p_bytes": np.zeros(steps, np.float32),
        "ranks": np.zeros((steps, pp), np.float32),
        "link_ranks": np.zeros((steps, pp), np.float32),
        "link_bits": np.zeros((steps, pp), np.float32),
    }
    mngr = xplib.checkpoint_manager(workdir / "runs" / f"pipe_{method}_s{seed}", max_to_keep=1)
    first = 0
    if mngr.latest_step() is not None:
        target = {"state": _flat(state), "hist": hist}
        restored = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(target))
        state = _unflat(restored["state"], state)
        hist = {k: np.asarray(v) for k, v in restored["hist"].items()}
        first = mngr.latest_step()
    vb = list(_val_batches(val_data, config))
    batch = config.pipe_batch * dp
    x_sh = NamedSharding(mesh, P("dp"))
    pending, t0 = [], time.time()

    def flush():
        for i, out in jax.device_get(pending):
            hist["loss"][i] = out["loss"]
            hist["dp_bytes"][i] = out["dp_bytes"]
            hist["p2p_bytes"][i] = out["p2p_bytes"]
            hist["ranks"][i] = out["stage_rank"]
            hist["link_ranks"][i] = out["link_rank"]
            hist["link_bits"][i] = out["link_bits"]
        pending.clear()

    for step in xplib.progress(range(first, steps), total=steps - first, desc=f"pp {method}"):
        rng = np.random.default_rng((seed, step))
        starts = rng.integers(0, train_data.shape[0] - config.seq - 1, size=batch)
        win = train_data[starts[:, None] + np.arange(config.seq + 1)[None, :]]
        x, y = jax.device_put((win[:, :-1], win[:, 1:]), x_sh)
        *state, out = step_fn(*state, x, y, jnp.int32(step), jnp.int32(seed))
        pending.append((step, out))
        if (step + 1) % config.eval_every == 0 or step + 1 == steps:
            flush()
            stages_rep = jax.device_put(state[1], NamedSharding(mesh, P()))
            vals = [float(val_fn(state[0], stages_rep, *b)) for b in vb]
            hist["val"][step] = float(np.mean(vals))
        if (step + 1) % config.ckpt_every == 0 or step + 1 == steps:
            flush()
            mngr.save(step + 1, args=ocp.args.StandardSave({"state": _flat(state), "hist": hist}))
    flush()
    mngr.wait_until_finished()
    return {"method": method, "seed": seed, "seconds": time.time() - t0, **hist}


def _flat(tree) -> dict:
    return {f"{i:05d}": x for i, x in enumerate(jax.tree.leaves(tree)) if x.size}


def _unflat(flat: dict, like):
    leaves = jax.tree.leaves(like)
    restored = [flat.get(f"{i:05d}", x) for i, x in enumerate(leaves)]
    return jax.tree.unflatten(jax.tree.structure(like), restored)


def _val_batches(val_data, config):
    rng = np.random.default_rng(1234)
    for _ in range(config.eval_batches):
        starts = rng.integers(0, val_data.shape[0] - config.seq - 1, size=16)
        win = val_data[starts[:, None] + np.arange(config.seq + 1)[None, :]]
        yield jnp.asarray(win[:, :-1]), jnp.asarray(win[:, 1:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small")
    ap.add_argument("--workdir", default="/tmp/edgc_pipe")
    ap.add_argument("--raw_when_cheaper", type=int, default=1, choices=(0, 1))
    args = ap.parse_args()
    # 8 simulated devices; read when the CPU backend starts (below), so setting it here works
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()
    jax.config.update("jax_platforms", "cpu")
    import config as edgc_config
    import train

    config = edgc_config.get_config(args.preset)
    config.link_raw_when_cheaper = bool(args.raw_when_cheaper)
    tokens = edgc_model.load_text_bytes()
    split = int(0.9 * tokens.shape[0])
    data, cache, runs = (tokens[:split], tokens[split:]), {}, []
    for seed in config.pipe_seeds:
        for method in config.pipe_methods:
            runs.append(run(method, seed, config, data, pathlib.Path(args.workdir), cache))
    table, claim = train.pipeline_results(runs, config)
    print(table.title)
    for row in [table.columns, *table.rows]:
        print(" | ".join(str(x) for x in row))
    print(claim)


if __name__ == "__main__":
    main()
