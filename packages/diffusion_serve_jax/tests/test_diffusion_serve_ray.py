"""The Ray backend on a local Ray instance: model nodes (micro) or whole workflows
(monolithic) as actors give the embedded runtime's results; an actor that raises, or dies,
fails its requests explicitly; actor groups grow and shrink with the autoscaler, a stopping
actor finishing its batch first."""

import asyncio
import concurrent.futures
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import ray

from diffusion_serve_jax import (
    Catalog,
    ModelSpec,
    NodeExecutor,
    ServingRuntime,
    TensorSpec,
    WorkflowBuilder,
    ZooConfig,
    autoscaler,
    init_zoo,
    ray_runtime,
    shutdown_actors,
    zoo_model_specs,
    zoo_workflows,
)

# A retried Ray start (see `local_ray`) can leave the timed-out attempt's Popen objects behind.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function Popen.__del__:pytest.PytestUnraisableExceptionWarning"
)
CFG = ZooConfig(width=16, depth=1, heads=2, num_timesteps=10, sample_steps=2)
BUCKETS = (4,)


@pytest.fixture(scope="module")
def local_ray():
    options = dict(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        object_store_memory=80 * 1024 * 1024,
    )
    # Ray reports usage statistics over the network by default; nothing here may reach out
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(**options)
    except Exception as e:  # noqa: BLE001 - Ray's fixed 30 s startup wait on a loaded machine
        if "timed out during startup" not in str(e):
            raise
        ray.shutdown()
        ray.init(**options)
    yield
    ray.shutdown()


def _t2i_catalog():
    """The zoo's encoder and denoiser and the t2i workflow over them."""
    specs = {s.name: s for s in zoo_model_specs(init_zoo(CFG, key=jax.random.key(0)))}
    cat = Catalog()
    for m in ("encoder", "denoiser"):
        cat.register_model(specs[m])
    cat.register_workflow(next(w for w in zoo_workflows() if w.name == "t2i"))
    return cat


async def _serve(rt, requests):
    await rt.start()
    reqs = [rt.submit(w, x) for w, x in requests]
    outs = await asyncio.gather(*(r.future for r in reqs), return_exceptions=True)
    await rt.stop()
    return reqs, outs


def test_ray_backend_equals_embedded_runtime_and_fails_explicitly(local_ray):
    cat = _t2i_catalog()
    requests = [("t2i", {"label": i % 10, "seed": i}) for i in range(6)]
    execs = {m: NodeExecutor(cat.models[m], buckets=BUCKETS) for m in cat.models}
    embedded = ServingRuntime(cat, num_workers=2, max_batch=4, executors=execs)
    _, want = asyncio.run(_serve(embedded, requests))

    rt = ray_runtime(cat, replicas={"denoiser": 2}, buckets=BUCKETS, num_cpus_per_actor=0.5)
    assert {m: len(g.actors) for m, g in rt.executors.items()} == {"encoder": 1, "denoiser": 2}
    reqs, got = asyncio.run(_serve(rt, requests))
    for r, a, b in zip(reqs, got, want, strict=True):
        assert r.status == "done", r.error
        np.testing.assert_allclose(a["image"], b["image"], rtol=1e-5, atol=1e-5)
    assert sum(rt.stats.batches.values()) >= 2  # both nodes ran remotely

    # dead replicas: the batches sent to them fail explicitly (never hang, never drop)
    for actor in rt.executors["denoiser"].actors:
        ray.kill(actor)
    reqs, outs = asyncio.run(_serve(rt, requests[:2]))
    for r, o in zip(reqs, outs, strict=True):
        assert r.status == "failed" and "model 'denoiser' failed" in r.error
        assert isinstance(o, RuntimeError)
    shutdown_actors(rt)

    # monolithic serving on Ray: one actor holds the whole workflow, same answers
    mono = ray_runtime(cat, mode="monolithic", buckets=BUCKETS, num_cpus_per_actor=0.5)
    assert {w: len(g.actors) for w, g in mono.workflow_executors.items()} == {"t2i": 1}
    reqs, got = asyncio.run(_serve(mono, requests))
    for r, a, b in zip(reqs, got, want, strict=True):
        assert r.status == "done", r.error
        np.testing.assert_allclose(a["image"], b["image"], rtol=1e-5, atol=1e-5)
    assert mono.stats.batches["t2i"] >= 1 and not set(mono.stats.batches) & set(cat.models)
    shutdown_actors(mono)


def test_ray_actor_error_fails_the_request_with_its_message(local_ray):
    cat = Catalog()
    spec = TensorSpec((2,))

    def broken(p, x):
        if x["v"].shape[0] > 0:  # raises while the actor traces its jitted call
            raise ValueError("broken model: refusing every batch")
        return {"v": x["v"] * p}

    cat.register_model(ModelSpec("broken", {"v": spec}, {"v": spec}, broken, jnp.ones(())))
    cat.register_workflow(
        WorkflowBuilder("w")
        .input("v", spec)
        .node("b", "broken", v="input.v")
        .output("v", "b.v")
        .build()
    )
    rt = ray_runtime(cat, buckets=(2,), num_cpus_per_actor=0.5)
    reqs, outs = asyncio.run(_serve(rt, [("w", {"v": [1.0, 2.0]})] * 3))
    for r, o in zip(reqs, outs, strict=True):
        assert r.status == "failed"
        assert "model 'broken' failed" in r.error and "refusing every batch" in r.error
        assert isinstance(o, RuntimeError)
    assert rt.stats.requests[("w", "failed")] == 3 and not rt._inflight
    shutdown_actors(rt)
    with pytest.raises(ValueError, match="replicas: unknown models"):
        ray_runtime(cat, replicas={"nope": 2})
    with pytest.raises(ValueError, match="mode"):
        ray_runtime(cat, mode="pipelined")
    with pytest.raises(ValueError, match="max_actors"):
        ray_runtime(cat, max_actors=3)
    with pytest.raises(ValueError, match="capacity"):
        ray_runtime(cat, autoscale=autoscaler(min_replicas=2), max_actors=1)


def _sleepy_catalog():
    """Model `a` (y = 2x after a host sleep: 0.5 s when x >= 100, else 30 ms) and `w` -> a."""

    def sleepy(p, x):
        def sleep(v):
            time.sleep(0.5 if float(v.max()) >= 100 else 0.03)
            return v

        shape = jax.ShapeDtypeStruct(x["x"].shape, jnp.float32)
        return {"y": jax.pure_callback(sleep, shape, x["x"]) * p}

    cat = Catalog()
    cat.register_model(
        ModelSpec("a", {"x": TensorSpec(())}, {"y": TensorSpec(())}, sleepy, jnp.asarray(2.0))
    )
    cat.register_workflow(
        WorkflowBuilder("w")
        .input("x", TensorSpec(()))
        .node("n", "a", x="input.x")
        .output("y", "n.y")
        .build()
    )
    return cat


def test_ray_actor_groups_follow_the_autoscaler(local_ray):
    policy = autoscaler(
        min_replicas=1, max_replicas=2, window_s=0.4, drain_s=0.2, down_delay_s=0.3, interval_s=0.05
    )
    rt = ray_runtime(
        _sleepy_catalog(), buckets=(1,), max_batch=1, num_cpus_per_actor=0.5, autoscale=policy
    )
    group = rt.executors["a"]
    assert group.size == 1 and rt.num_workers == 2

    async def main():
        await rt.start()
        for _ in range(2):  # compile, then one timed batch
            assert float((await rt.submit("w", {"x": 1.0}).future)["y"]) == 2.0
        reqs = [rt.submit("w", {"x": float(i)}) for i in range(40)]
        peak = 1
        while not all(r.future.done() for r in reqs):
            peak = max(peak, group.size)
            await asyncio.sleep(0.01)
        assert [float(r.future.result()["y"]) for r in reqs] == [2.0 * i for i in range(40)]
        assert peak == 2 and rt.stats.scale_ups["a"] >= 1 and group.started >= 2
        for _ in range(500):  # idle: back to one actor
            if group.size == 1 and len(group.actors) == 1:
                break
            await asyncio.sleep(0.01)
        assert rt.replicas["a"] == 1 and group.stopped == group.started - 1
        await rt.stop()

    asyncio.run(main())
    # a stopping actor finishes the batch it is running: shrink while two long batches run
    group.resize(2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futs = [pool.submit(group.run, {"x": np.full((1,), 100.0 + i, np.float32)}) for i in (0, 1)]
        for _ in range(3000):  # both actors taken (the new one once it is up)
            if not (group._free.qsize() or group._pending or any(f.done() for f in futs)):
                break
            time.sleep(0.005)
        group.resize(1)
        assert [float(f.result()["y"][0]) for f in futs] == [200.0, 202.0]
    assert group.size == 1 and len(group.actors) == 1
    assert group.stopped == group.started - 1
    shutdown_actors(rt)
