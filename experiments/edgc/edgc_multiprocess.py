"""The GPT experiment across real processes: `jax.distributed`, gloo CPU collectives over loopback.

    python experiments/edgc/edgc_multiprocess.py --preset=small --out=/tmp/edgc_mp.json
    python experiments/edgc/edgc_multiprocess.py --check --out=/tmp/edgc_mp_check.json

`launch(config, out)` starts `config.mp_processes` workers (this file, one CPU device each) that
join one `jax.distributed` job (coordinator on 127.0.0.1) with the gloo CPU collectives, so the
compressed all-reduce inside `jax.shard_map` (`train.build_step`, the very step the 8-simulated-
device runs use) crosses process boundaries over TCP. For each method every process trains the
same GPT from the same initialisation on its own slice of the same global batches (`train_dp`,
which does not care whether the "dp" mesh axis spans processes or simulated devices). Worker 0
records the loss, the exact bytes, the wall time per step and the *measured* communication time:
the median step with the collective minus the median of the same step with `axis_name=None` (the
same compute, no transport), beside the alpha-beta time of the same bytes for (a) the loopback
transport itself, alpha and beta fitted from two timed psums, and (b) the V100 cluster.

`--check` runs a few steps on 2 processes and then the same training in this process on 2
simulated devices, and writes both (the test compares their losses).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import numpy as np

CHECK = {  # --check: a tiny model, a few steps (tests)
    "dim": 16,
    "heads": 2,
    "layers": 1,
    "seq": 8,
    "batch_per_device": 2,
    "eval_batches": 1,
    "mp_steps": 3,
    "mp_methods": ("edgc",),
    "mp_reps": 0,
    "window": 1,
    "period": 1,
    "init_rank": 2,
    "max_rank": 4,
    "start_fraction": 0.25,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config, out: str, *, timeout: float = 600.0) -> dict:
    """Start the worker processes, wait for them, return worker 0's results."""
    port = _free_port()
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    env["JAX_PLATFORMS"] = "cpu"
    cfg_path = out + ".config.json"
    with open(cfg_path, "w") as f:
        json.dump(config.to_dict(), f)
    n = config.mp_processes
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--port", str(port)]
    cmd += ["--processes", str(n), "--out", out, "--config-json", cfg_path]
    log_paths = [f"{out}.worker{i}.log" for i in range(n)]
    procs = []
    for i, log in enumerate(log_paths):
        with open(log, "w") as f:  # a file, not a pipe: a chatty worker cannot block on it
            procs.append(
                subprocess.Popen(
                    cmd + ["--process-id", str(i)], env=env, stdout=f, stderr=subprocess.STDOUT
                )
            )
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(deadline - time.monotonic(), 1.0))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p in procs:
        p.wait()
    logs = []
    for log in log_paths:
        with open(log) as f:
            logs.append(f.read()[-5000:])
    for i, (p, log) in enumerate(zip(procs, logs, strict=True)):
        if p.returncode != 0:
            raise RuntimeError(f"multi-process worker {i} exited with {p.returncode}:\n{log}")
    with open(out) as f:
        return json.load(f)


def _global(x, sharding):
    """A global jax.Array from a host array every process holds in full."""
    import jax

    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _local(a) -> np.ndarray:
    """This process's first shard of a global array (all of it when replicated)."""
    return np.asarray(a.addressable_shards[0].data)


def _median_ms(fn, reps: int) -> float:
    import jax

    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def fit_loopback(mesh, reps: int):
    """alpha-beta of this mesh's all-reduce: T = 2 (N-1) alpha + 2 (N-1)/N B / beta, 2 sizes."""
    import jax
    from jax import P
    from jax.sharding import NamedSharding

    import grad_compress as gc

    n = mesh.devices.size
    fn = jax.jit(
        jax.shard_map(lambda x: jax.lax.psum(x, "dp"), mesh=mesh, in_specs=P("dp"), out_specs=P())
    )
    times = {}
    for k in (1, 1 << 20):
        x = _global(np.ones((n, k), np.float32), NamedSharding(mesh, P("dp")))
        jax.block_until_ready(fn(x))
        times[k] = _median_ms(lambda x=x: fn(x), reps) / 1e3
    alpha = times[1] / (2 * (n - 1))
    moved = 2 * (n - 1) / n * 4 * (1 << 20)
    beta = moved / max(times[1 << 20] - 2 * (n - 1) * alpha, 1e-9)
    return gc.Network(f"loopback gloo, fitted ({n} processes)", alpha, beta)


def train_dp(config, mesh, method: str, seed: int, data, *, loopback=None) -> dict:
    """`config.mp_steps` data-parallel GPT steps over mesh axis "dp", measured and modelled."""
    import edgc_model
    import jax
    import optax
    import train
    from flax import nnx
    from jax import P
    from jax.sharding import NamedSharding

    import grad_compress as gc

    train_data, val_data = data
    n = mesh.devices.size
    c = config.copy_and_resolve_references()
    c.steps, c.devices = config.mp_steps, n
    model = edgc_model.GPT(
        vocab=256, dim=c.dim, heads=c.heads, layers=c.layers, seq=c.seq, rngs=nnx.Rngs(seed)
    )
    graphdef, params = nnx.split(model, nnx.Param)
    leaves = len(jax.tree.leaves(params))
    stage_fn = lambda path, shape: edgc_model.stage_of(
        path, shape, layers=c.layers, stages=c.stages
    )
    comp, ranks = train.make_compressor(method, c, leaves, stage_fn)
    with_ranks = ranks is not None
    ranks = np.asarray(ranks) if with_ranks else np.zeros((leaves,), np.int32)
    optimizer = optax.adam(c.learning_rate)
    step_fn, loss_fn = train.build_step(graphdef, comp, optimizer, mesh, with_ranks=with_ranks)
    rep, dp = NamedSharding(mesh, P()), NamedSharding(mesh, P("dp"))
    host = jax.device_get((params, optimizer.init(params), jax.jit(comp.init)(params)))
    params, opt_state = jax.tree.map(lambda a: _global(a, rep), host[:2])
    cstate = jax.tree.map(lambda a: _global(np.broadcast_to(a, (n,) + a.shape), dp), host[2])

    start = int(c.start_fraction * c.steps)
    losses, nbytes, step_ms, model = [], [], [], {"loopback": [], "V100": []}
    for step in range(c.steps):
        rng = np.random.default_rng((seed, step))  # the same windows as train.run_one
        starts = rng.integers(0, train_data.shape[0] - c.seq - 1, size=c.batch_per_device * n)
        win = train_data[starts[:, None] + np.arange(c.seq + 1)[None, :]]
        x, y = _global(win[:, :-1], dp), _global(win[:, 1:], dp)
        args = (np.int32(step), np.int32(seed), ranks)
        t = time.perf_counter()
        params, opt_state, cstate, loss, stats, _ = step_fn(params, opt_state, cstate, x, y, *args)
        losses.append(float(_local(loss)))
        step_ms.append(1e3 * (time.perf_counter() - t))
        stats = gc.CommStats(*(float(_local(s)) for s in stats))
        nbytes.append(stats.total_bytes)
        if loopback is not None:
            model["loopback"].append(1e3 * gc.comm_time(stats, n, loopback))
        model["V100"].append(1e3 * gc.comm_time(stats, n, gc.V100_CLUSTER))

    lp = jax.tree.map(_local, params)
    val = [float(loss_fn(lp, vx, vy)) for vx, vy in train._val_batches(val_data, c)]
    row = {
        "method": method,
        "seed": seed,
        "processes": n,
        "losses": losses,
        "val": float(np.mean(val)),
        "bytes": float(np.mean(nbytes[start:])),
        "step_ms": float(np.median(step_ms[1:])),
        "modelled_V100_ms": float(np.mean(model["V100"][start:])),
    }
    if not c.mp_reps:
        return row
    # measured transport time: the last (compressed) step again, with and without the collective
    local_fn = jax.jit(
        train.local_step(graphdef, comp, optimizer, with_ranks=with_ranks, axis_name=None)
    )
    state = (params, opt_state, cstate)
    lp, lo, lc = jax.tree.map(_local, state)
    lc = jax.tree.map(lambda a: a[0], lc)
    lx, ly = _local(x), _local(y)
    jax.block_until_ready(local_fn(lp, lo, lc, lx, ly, *args))
    dist_ms = _median_ms(lambda: step_fn(*state, x, y, *args), c.mp_reps)
    local_ms = _median_ms(lambda: local_fn(lp, lo, lc, lx, ly, *args), c.mp_reps)
    return row | {
        "dist_ms": dist_ms,
        "local_ms": local_ms,
        "measured_comm_ms": max(dist_ms - local_ms, 0.0),
        "modelled_loopback_ms": float(np.mean(model["loopback"][start:])),
    }


def run_all(config, mesh) -> dict:
    import edgc_model

    tokens = edgc_model.load_text_bytes()
    split = int(0.9 * tokens.shape[0])
    data = (tokens[:split], tokens[split:])
    out = {"processes": mesh.devices.size}
    loopback = None
    if config.mp_reps:  # 0: no timing (tests)
        loopback = fit_loopback(mesh, max(config.mp_reps, 3))
        out["loopback"] = {
            "latency_us": 1e6 * loopback.latency_s,
            "bandwidth_GB_per_s": loopback.bandwidth_bytes_per_s / 1e9,
        }
    out["rows"] = [
        train_dp(config, mesh, m, config.seeds[0], data, loopback=loopback)
        for m in config.mp_methods
    ]
    return out


def worker(process_id: int, processes: int, port: int, out: str, config_json: str) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=processes, process_id=process_id
    )
    import ml_collections

    with open(config_json) as f:
        config = ml_collections.ConfigDict(json.load(f))
    mesh = jax.make_mesh((processes,), ("dp",))
    results = run_all(config, mesh)
    results["backend"] = "gloo over TCP loopback, one CPU device per process"
    if process_id == 0:
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
    jax.distributed.shutdown()


def check(out: str) -> dict:
    """2 processes vs 2 simulated devices in one process: the same training (tests)."""
    import config as edgc_config

    c = edgc_config.get_config("smoke")
    c.update(CHECK)
    c.mp_processes = 2
    multi = launch(c, out + ".multi.json")
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax

    mesh = jax.make_mesh((2,), ("dp",))
    single = run_all(c, mesh)
    res = {"multi": multi, "single": single}
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/edgc_multiprocess.json")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--check", action="store_true", help="2 processes vs 1 process (tests)")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--process-id", type=int, default=0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--config-json", default="")
    args = ap.parse_args()
    if args.worker:
        worker(args.process_id, args.processes, args.port, args.out, args.config_json)
    elif args.check:
        res = check(args.out)
        for m, s in zip(res["multi"]["rows"], res["single"]["rows"], strict=True):
            print(m["method"], "2 processes:", m["losses"], "1 process:", s["losses"])
    else:
        import config as edgc_config

        res = launch(edgc_config.get_config(args.preset), args.out)
        for r in res["rows"]:
            print(json.dumps(r))


if __name__ == "__main__":
    main()
