"""Per-node profile of the LegoDiffusion model zoo on whatever JAX backend this runs on.

    PYTHONPATH=packages/diffusion_serve_jax/src python \
        packages/diffusion_serve_jax/benchmarks/profile_nodes.py --out /tmp/profile.json \
        [--checkpoint /tmp/lego_diffusion] [--quick]

Builds the zoo of `experiments/lego_diffusion` (its `small` preset's sizes, repeated below),
restored from the experiment's checkpoint under `--checkpoint` if one is there, otherwise
freshly initialised (timing does not depend on the weights; the output says which). For every
model a workflow uses it measures the median seconds of one batch at every bucket the
executor compiles (after a warm-up call, `block_until_ready`), the parameter bytes, and the
load time: orbax restore from local disk onto the device, and separately the host -> device
`device_put` of the parameters. Writes the profile `load_node_profile` reads (the format the
experiment's simulator is calibrated on), with the device kind and the JAX version.
On CPU the XLA calls are single-threaded, as in the experiment.
"""

import argparse
import os
import tempfile
import time

import diffusion_serve_jax as ds

ds.single_threaded_cpu()  # before the first computation; only the CPU backend reads it

import jax  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from flax import nnx  # noqa: E402

# experiments/lego_diffusion/config.py, preset `small` (keep in step with it)
ZOO = dict(
    width=64,
    depth=3,
    heads=4,
    num_timesteps=100,
    sample_steps=50,
    guidance=2.0,
    latent=True,
    latent_width=32,
    latent_depth=2,
)
LORA_NAMES, LORA_RANK, SEED, BUCKETS = ("bold",), 4, 0, (1, 4, 16)


def build_zoo(checkpoint):
    """The experiment's zoo; restored from `<checkpoint>/checkpoints` when present."""
    zoo = ds.init_zoo(ds.ZooConfig(**ZOO), key=jax.random.key(SEED))
    fresh = [
        ds.lora_init(zoo.diffusion.dit, rank=LORA_RANK, key=jax.random.key(100 + i))
        for i in range(len(LORA_NAMES))
    ]
    zoo.lora = ds.lora_stack(fresh)
    path = checkpoint and os.path.join(os.path.abspath(checkpoint), "checkpoints")
    if not path or not os.path.isdir(path):
        return zoo, "freshly initialised (no checkpoint; timing does not depend on weights)"
    modules = zoo.modules
    target = {k: nnx.state(m) for k, m in modules.items()} | {"lora": zoo.lora}
    mngr = ocp.CheckpointManager(path)
    step = mngr.latest_step()
    if step is None:
        return zoo, "freshly initialised (empty checkpoint dir; timing does not depend on weights)"
    restored = mngr.restore(step, args=ocp.args.StandardRestore(target))
    for k, m in modules.items():
        nnx.update(m, restored[k])
    zoo.lora = restored["lora"]
    return zoo, f"trained (restored from {path}, step {step})"


def load_time(params, store, repeats):
    """(orbax restore from local disk onto the device, device_put of host params), medians."""
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(store, params)
    ckpt.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, params)
    host = jax.tree.map(np.asarray, params)
    restore, put = [], []
    for _ in range(repeats + 1):  # the first restore warms up orbax
        t0 = time.perf_counter()
        jax.block_until_ready(ckpt.restore(store, abstract))
        restore.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(jax.device_put(host))
        put.append(time.perf_counter() - t0)
    ckpt.close()
    return float(np.median(restore[1:])), float(np.median(put[1:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", default="/tmp/diffusion_serve_profile.json")
    ap.add_argument("--checkpoint", default=None, help="experiment workdir with checkpoints/")
    ap.add_argument("--quick", action="store_true", help="fewer repeats (CPU check, < 60 s)")
    args = ap.parse_args()
    repeats, load_repeats = (3, 1) if args.quick else (15, 5)
    t_start = time.perf_counter()
    zoo, weights = build_zoo(args.checkpoint)
    catalog = ds.zoo_catalog(zoo)
    used = sorted({n.model for w in catalog.workflows.values() for n in w.workflow.nodes})
    lat, size, load, put = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in used:
            t0 = time.perf_counter()
            lat[m] = ds.NodeExecutor(catalog.models[m], buckets=BUCKETS).profile(repeats=repeats)
            size[m] = int(catalog.models[m].param_bytes)
            load[m], put[m] = load_time(catalog.models[m].params, f"{tmp}/{m}", load_repeats)
            print(
                f"{m:16s} {size[m] / 1e6:7.3f} MB  "
                + "  ".join(f"b{b}={1e3 * t:8.3f} ms" for b, t in lat[m].items())
                + f"  restore={1e3 * load[m]:.2f} ms  device_put={1e3 * put[m]:.3f} ms"
                f"  ({time.perf_counter() - t0:.1f} s)"
            )
    dev = jax.devices()[0]
    meta = {
        "device_kind": dev.device_kind,
        "backend": jax.default_backend(),
        "num_devices": jax.device_count(),
        "jax_version": jax.__version__,
        "weights": weights,
        "buckets": list(BUCKETS),
        "zoo": {k: v for k, v in ZOO.items()} | {"lora_rank": LORA_RANK},
        "repeats": repeats,
        "load_repeats": load_repeats,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    profile = ds.NodeProfile(lat, size, load, put, meta)
    ds.save_node_profile(args.out, profile)
    ds.load_node_profile(args.out)  # what we wrote is what the experiment reads
    print(f"{dev.device_kind} ({jax.default_backend()}), jax {jax.__version__}, {weights}")
    print(f"wrote {args.out} in {meta['wall_s']} s")


if __name__ == "__main__":
    main()
