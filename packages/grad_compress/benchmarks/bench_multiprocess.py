"""Compressed all-reduce across real processes: `jax.distributed` on CPU, gloo over loopback.

    python packages/grad_compress/benchmarks/bench_multiprocess.py [--processes 2] [--out PATH]

The launcher starts `--processes` Python processes on this machine (one CPU device each); they
join one `jax.distributed` job (coordinator on 127.0.0.1) with the gloo CPU collectives, so
`psum` / `all_gather` inside `jax.shard_map` cross process boundaries over TCP. Each worker:
- checks that the uncompressed all-reduce and a full-rank PowerSGD equal the exact mean of every
  worker's gradient (each worker can regenerate the others' gradients from their seeds);
- times the jitted step of each compressor with the collective (over "dp") and without it
  (`axis_name=None`: the same compression compute, no transport); the difference is the
  *measured* communication time on a real transport, printed beside the exact bytes sent.
Then (unless `--quick`) the processes train a small MLP data parallel for `--train-steps` steps,
uncompressed and with PowerSGD, and report loss, ms/step and that their parameters stay equal.
Worker 0 writes the JSON (to `--out`) and the launcher prints a table.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

SHAPES = {"w1": (256, 512), "w2": (512, 256), "b": (256,)}
QUICK_SHAPES = {"w": (64, 96), "b": (96,)}  # --quick: the test's size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    processes: int,
    out: str,
    repeats: int,
    *,
    quick: bool = False,
    train_steps: int = 0,
    timeout: float = 600.0,
) -> dict:
    """Start the workers, wait for them, return worker 0's results."""
    port = _free_port()
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--port", str(port)]
    cmd += ["--processes", str(processes), "--out", out, "--repeats", str(repeats)]
    cmd += ["--quick"] if quick else ["--train-steps", str(train_steps)]
    procs = [
        subprocess.Popen(
            cmd + ["--process-id", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(processes)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, log) in enumerate(zip(procs, logs, strict=True)):
        if p.returncode != 0:
            raise RuntimeError(f"worker {i} exited with {p.returncode}:\n{log}")
    with open(out) as f:
        return json.load(f)


def worker(
    process_id: int,
    processes: int,
    port: int,
    out: str,
    repeats: int,
    quick: bool,
    train_steps: int,
):
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=processes, process_id=process_id
    )
    import jax.numpy as jnp
    import numpy as np
    from jax import P
    from jax.sharding import NamedSharding

    import grad_compress as gc

    mesh = jax.make_mesh((processes,), ("dp",))
    shard = NamedSharding(mesh, P("dp"))
    device = jax.local_devices()[0]

    shapes = QUICK_SHAPES if quick else SHAPES

    def grads_of(worker_id):  # numpy: every worker can regenerate every other's gradient
        rng = np.random.default_rng(worker_id)
        return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}

    def global_array(local):  # this process's piece of a (processes, ...) dp-sharded array
        local = jax.device_put(jnp.asarray(local)[None], device)
        return jax.make_array_from_single_device_arrays(
            (processes,) + local.shape[1:], shard, [local]
        )

    mine = grads_of(process_id)
    exact = jax.tree.map(
        lambda *g: np.mean(np.stack(g), 0), *[grads_of(i) for i in range(processes)]
    )
    full = min(min(s) for s in shapes.values() if len(s) == 2)
    comps = {
        "none": gc.no_compression(),
        "powersgd_r2": gc.powersgd(2),
        "powersgd_full": gc.powersgd(full, policy=lambda s: len(s) == 2),
    }
    if not quick:
        comps["powersgd_r8"] = gc.powersgd(8)
        comps["topk_1%"] = gc.topk(0.01)
    results = {"processes": processes, "backend": "gloo (TCP loopback)", "shapes": shapes}
    results["rows"] = []
    for name, comp in comps.items():
        state = jax.jit(comp.init)(mine)

        def dist(g, s, k, comp=comp):
            g, s = jax.tree.map(lambda a: a[0], (g, s))
            mean, s, stats = comp.update(g, s, key=k, axis_name="dp")
            return jax.tree.map(lambda a: a[None], (mean, s)) + (stats,)

        step = jax.jit(
            jax.shard_map(
                dist,
                mesh=mesh,
                in_specs=(P("dp"), P("dp"), P()),
                out_specs=(P("dp"), P("dp"), P()),
                check_vma=False,
            )
        )
        local = jax.jit(lambda g, s, k, comp=comp: comp.update(g, s, key=k))
        g_all, s_all = jax.tree.map(global_array, (mine, state))
        key = jax.random.key(0)
        mean, _, stats = step(g_all, s_all, key)
        got = jax.tree.map(lambda a: np.asarray(a.addressable_shards[0].data[0]), mean)
        err = max(float(np.max(np.abs(got[k] - exact[k]))) for k in shapes)

        def timed(fn, *args):
            jax.block_until_ready(fn(*args))
            ts = []
            for _ in range(repeats):
                t = time.perf_counter()
                jax.block_until_ready(fn(*args))
                ts.append(time.perf_counter() - t)
            return statistics.median(ts)

        t_dist = timed(step, g_all, s_all, key)
        t_local = timed(local, mine, state, key)
        stats = jax.tree.map(lambda a: float(np.asarray(a.addressable_shards[0].data)), stats)
        results["rows"].append(
            {
                "compressor": name,
                "bytes_sent": stats.allreduce_bytes + stats.allgather_bytes,
                "messages": stats.allreduce_messages + stats.allgather_messages,
                "max_error_vs_exact_mean": err,
                "step_ms": 1e3 * t_dist,
                "local_ms": 1e3 * t_local,
                "measured_comm_ms": 1e3 * max(t_dist - t_local, 0.0),
            }
        )
    if train_steps:
        results["training"] = train(mesh, global_array, process_id, train_steps)
    if process_id == 0:
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
    jax.distributed.shutdown()


def train(mesh, global_array, process_id: int, steps: int) -> list[dict]:
    """Data-parallel SGD of a small MLP across the processes, uncompressed vs PowerSGD.

    Each process draws its own batches (a fixed random teacher network, 64 rows per step);
    gradients are compressed per process and all-reduced over gloo. Returns the final loss, the
    mean wall time per step and the largest parameter difference between processes.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import P

    import grad_compress as gc

    t1, t2 = np.random.default_rng(99).standard_normal((2, 32, 32)).astype(np.float32)

    def batch(step):
        x = np.random.default_rng((process_id, step)).standard_normal((64, 32)).astype(np.float32)
        return x, np.tanh(x @ t1) @ t2 / 4

    def loss_fn(params, x, y):
        h = jnp.tanh(x @ params["w1"] + params["b1"][None, :])
        return jnp.mean((h @ params["w2"] - y) ** 2)

    keys = jax.random.split(jax.random.key(0), 2)
    init = {
        "w1": jax.random.normal(keys[0], (32, 256)) / 6,
        "b1": jnp.zeros((256,)),
        "w2": jax.random.normal(keys[1], (256, 32)) / 16,
    }
    rows = []
    for name, comp in (("none", gc.no_compression()), ("powersgd_r2", gc.powersgd(2))):

        def local(params, cs, x, y, comp=comp):
            cs = jax.tree.map(lambda a: a[0], cs)
            loss, g = jax.value_and_grad(loss_fn)(params, x[0], y[0])
            g, cs, stats = comp.update(g, cs, axis_name="dp")
            params = jax.tree.map(lambda p, d: p - 0.2 * d, params, g)
            total = sum(jnp.sum(p) for p in jax.tree.leaves(params))
            spread = jax.lax.pmax(total, "dp") - jax.lax.pmin(total, "dp")
            out = (jax.lax.pmean(loss, "dp"), spread, stats.total_bytes)
            return params, jax.tree.map(lambda a: a[None], cs), out

        step = jax.jit(
            jax.shard_map(
                local,
                mesh=mesh,
                in_specs=(P(), P("dp"), P("dp"), P("dp")),
                out_specs=(P(), P("dp"), P()),
                check_vma=False,
            )
        )
        params = jax.device_put(init, jax.sharding.NamedSharding(mesh, P()))
        cs = jax.tree.map(global_array, jax.jit(comp.init)(init))
        losses, spread, t0 = [], 0.0, None
        for i in range(steps + 1):
            if i == 1:  # step 0 compiles
                t0 = time.perf_counter()
            x, y = batch(i)
            params, cs, (loss, sp, nbytes) = step(params, cs, global_array(x), global_array(y))
            losses.append(float(loss))
            spread = max(spread, float(sp))
        rows.append(
            {
                "compressor": name,
                "first_loss": losses[0],
                "final_loss": losses[-1],
                "step_ms": 1e3 * (time.perf_counter() - t0) / steps,
                "bytes_per_step": float(nbytes),
                "max_param_checksum_spread": spread,
            }
        )
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/bench_multiprocess.json")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small tensors, 3 compressors (tests)")
    ap.add_argument("--train-steps", type=int, default=60, help="multi-process SGD steps")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--process-id", type=int, default=0)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    if args.worker:
        worker(
            args.process_id,
            args.processes,
            args.port,
            args.out,
            args.repeats,
            args.quick,
            0 if args.quick else args.train_steps,
        )
        return
    res = launch(
        args.processes, args.out, args.repeats, quick=args.quick, train_steps=args.train_steps
    )
    print(f"{res['processes']} processes, {res['backend']}")
    print(
        f"{'compressor':>14} {'bytes':>10} {'msgs':>5} {'max err':>9} {'step ms':>8} "
        f"{'local ms':>8} {'comm ms':>8}"
    )
    for r in res["rows"]:
        print(
            f"{r['compressor']:>14} {r['bytes_sent']:>10.0f} {r['messages']:>5.0f} "
            f"{r['max_error_vs_exact_mean']:>9.2e} {r['step_ms']:>8.2f} {r['local_ms']:>8.2f} "
            f"{r['measured_comm_ms']:>8.2f}"
        )
    for r in res.get("training", []):
        print(
            f"train {r['compressor']:>12}: loss {r['first_loss']:.4f} -> {r['final_loss']:.4f}, "
            f"{r['step_ms']:.2f} ms/step, {r['bytes_per_step']:.0f} B/step, "
            f"param spread across processes {r['max_param_checksum_spread']:.1e}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
