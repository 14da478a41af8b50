"""The serving runtime and its HTTP API on localhost: micro-serving and monolithic give the
same answers as calling the models directly; errors are explicit, nothing is dropped."""

import asyncio
import time

import aiohttp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffusion_serve_jax import (
    BatchPolicy,
    Catalog,
    ModelSpec,
    NodeExecutor,
    Overloaded,
    ServingRuntime,
    ShuttingDown,
    TensorSpec,
    WorkflowBuilder,
    ZooConfig,
    gamma_arrivals,
    init_zoo,
    on_off_arrivals,
    run_open_loop,
    sequence_parallel_specs,
    serve,
    slo_attainment,
    synthetic_trace,
    trace_to_workflow,
    zoo_catalog,
)

CFG = ZooConfig(width=16, depth=1, heads=2, num_timesteps=10, sample_steps=2)


@pytest.fixture(scope="module")
def zoo():
    z = init_zoo(CFG, key=jax.random.key(0))
    out = z.diffusion.dit.out.kernel  # zero-initialised: make the denoiser's output non-trivial
    out[...] = 0.1 * jax.random.normal(jax.random.key(1), out.shape)
    return z


@pytest.fixture(scope="module")
def zoo_setup(zoo):
    cat = zoo_catalog(zoo)
    used = sorted({n.model for w in cat.workflows.values() for n in w.workflow.nodes})
    execs = {m: NodeExecutor(cat.models[m], buckets=(4,)) for m in used}
    return cat, execs


def _inputs(wf, i):
    x = {"label": i % 10, "seed": i}
    if wf == "control_upscale":
        x["edges"] = np.full((8, 8), 0.5).tolist()
    return x


def _direct(cat, wf_name, inputs):
    """Reference: run the workflow's nodes one by one with plain jitted calls (batch 1)."""
    cw = cat.workflows[wf_name]
    vals = {
        f"input.{k}": np.asarray(v, cw.workflow.inputs[k].dtype)[None] for k, v in inputs.items()
    }
    for name in cw.order:
        node = cw.node(name)
        spec = cat.models[node.model]
        outs = jax.jit(spec.fn)(spec.params, {a: vals[s] for a, s in node.inputs.items()})
        vals |= {f"{name}.{k}": np.asarray(v) for k, v in outs.items()}
    return {k: vals[s][0] for k, s in cw.workflow.outputs.items()}


@pytest.mark.parametrize("batching", [False, True], ids=["buckets", "policy"])
@pytest.mark.parametrize("mode", ["micro", "monolithic"])
def test_runtime_matches_direct_calls(zoo_setup, mode, batching):
    cat, execs = zoo_setup
    # a flat profile (cheap batching): short queues wait up to 20 ms for fuller batches
    pol = BatchPolicy({m: {4: 1e-3} for m in execs}, max_delay_s=0.02) if batching else None

    async def main():
        rt = ServingRuntime(
            cat, mode=mode, num_workers=4, executors=execs, max_batch=4, batching=pol
        )
        await rt.start()
        reqs = [rt.submit(w, _inputs(w, i)) for i, w in enumerate(sorted(cat.workflows) * 2)]
        outs = await asyncio.gather(*(r.future for r in reqs))
        lone = rt.submit("t2i", _inputs("t2i", 0))  # a queue of one waits, then runs
        await lone.future
        await rt.stop()
        return rt, reqs, outs, lone

    rt, reqs, outs, lone = asyncio.run(main())
    if batching:
        assert lone.status == "done" and lone.latency >= 0.02 and rt.stats.waits > 0
    for r, out in zip(reqs, outs, strict=True):
        want = _direct(cat, r.workflow.name, _inputs(r.workflow.name, reqs.index(r)))
        for k in want:
            np.testing.assert_allclose(out[k], want[k], rtol=1e-4, atol=1e-5)
        assert r.status == "done" and r.latency > 0
    assert sum(n for (w, s), n in rt.stats.requests.items() if s == "done") == len(reqs) + 1
    if mode == "micro":  # the shared denoiser batched requests of different workflows together
        assert rt.stats.batches["denoiser"] < rt.stats.batch_rows["denoiser"]
        assert (
            rt.memory_bytes()
            < ServingRuntime(cat, mode="monolithic", executors=execs, num_workers=4).memory_bytes()
        )


def test_http_round_trip(zoo_setup):
    cat, execs = zoo_setup

    async def main():
        rt = ServingRuntime(cat, mode="micro", num_workers=2, executors=execs, max_batch=4)
        h = await serve(rt)
        async with aiohttp.ClientSession() as s:
            body = {"workflow": "t2i_checked", "inputs": _inputs("t2i_checked", 3), "wait": True}
            async with s.post(f"{h.url}/v1/requests", json=body) as r:
                assert r.status == 200, await r.text()
                done = await r.json()
            assert done["status"] == "done"
            np.testing.assert_allclose(np.asarray(done["outputs"]["probs"]).sum(), 1.0, rtol=1e-5)
            want = _direct(cat, "t2i_checked", _inputs("t2i_checked", 3))
            np.testing.assert_allclose(
                done["outputs"]["image"], want["image"], rtol=1e-4, atol=1e-5
            )
            body = {"workflow": "control_upscale", "inputs": _inputs("control_upscale", 1)}
            async with s.post(f"{h.url}/v1/requests", json=body) as r:
                assert r.status == 202
                rid = (await r.json())["id"]
            async with s.get(f"{h.url}/v1/requests/{rid}/stream") as r:
                events = [line for line in (await r.text()).splitlines() if line]
            assert '"done"' in events[-1]
            async with s.get(f"{h.url}/v1/requests/{rid}") as r:
                polled = await r.json()
            assert polled["status"] == "done"
            assert np.asarray(polled["outputs"]["image"]).shape == (16, 16)
            async with s.get(f"{h.url}/v1/workflows") as r:
                assert set(await r.json()) == set(cat.workflows)
            async with s.get(f"{h.url}/v1/models") as r:
                models = await r.json()
            assert len(models["denoiser"]["workflows"]) == 3  # one instance, three workflows
            async with s.get(f"{h.url}/healthz") as r:
                assert (await r.json())["status"] == "ok"
            async with s.get(f"{h.url}/metrics") as r:
                text = await r.text()
            assert 'diffusion_requests_total{workflow="t2i_checked",status="done"} 1' in text
            bad = [
                ({"workflow": "nope", "inputs": {}}, 404, "unknown"),
                ({"workflow": "t2i", "inputs": {"label": 1}}, 400, "missing ['seed']"),
                (
                    {"workflow": "t2i", "inputs": {"label": [1, 2], "seed": 0}},
                    400,
                    "inputs.label: expected shape",
                ),
                (
                    {"workflow": "t2i", "inputs": {"label": 1, "seed": 0}, "slo_ms": -1},
                    400,
                    "slo_ms",
                ),
                ([1, 2], 400, "body: expected a JSON object"),
            ]
            for body, status, msg in bad:
                async with s.post(f"{h.url}/v1/requests", json=body) as r:
                    assert r.status == status
                    assert msg in (await r.json())["error"]
            async with s.get(f"{h.url}/v1/requests/unknown") as r:
                assert r.status == 404
        await h.close()

    asyncio.run(main())


def _slow_catalog(fail: bool = False):
    def slow(p, x):
        def sleep(v):
            time.sleep(0.3)
            if fail:
                raise RuntimeError("boom")
            return v

        return {
            "y": jax.pure_callback(sleep, jax.ShapeDtypeStruct(x["x"].shape, jnp.float32), x["x"])
        }

    cat = Catalog()
    cat.register_model(ModelSpec("slow", {"x": TensorSpec(())}, {"y": TensorSpec(())}, slow))
    cat.register_workflow(
        WorkflowBuilder("w")
        .input("x", TensorSpec(()))
        .node("n", "slow", x="input.x")
        .output("y", "n.y")
        .build()
    )
    return cat


def test_overload_gives_429_with_retry_hint_and_failures_are_explicit():
    async def main():
        rt = ServingRuntime(
            _slow_catalog(), mode="micro", num_workers=1, queue_limit=1, max_batch=1, buckets=(1,)
        )
        h = await serve(rt)
        async with aiohttp.ClientSession() as s:
            first = rt.submit("w", {"x": 1.0})
            await asyncio.sleep(0.05)  # the worker takes it; the queue is empty again
            second = rt.submit("w", {"x": 2.0})  # queued: the queue is now full
            with pytest.raises(Overloaded):
                rt.submit("w", {"x": 3.0})
            async with s.post(
                f"{h.url}/v1/requests", json={"workflow": "w", "inputs": {"x": 4.0}}
            ) as r:
                assert r.status == 429
                assert int(r.headers["Retry-After"]) >= 1
            assert await first.future == {"y": 1.0}
            assert await second.future == {"y": 2.0}
        await h.close()
        # a model that raises: the request fails explicitly (HTTP 500 with the message)
        rt = ServingRuntime(_slow_catalog(fail=True), num_workers=1, buckets=(1,))
        h = await serve(rt)
        async with aiohttp.ClientSession() as s:
            body = {"workflow": "w", "inputs": {"x": 1.0}, "wait": True}
            async with s.post(f"{h.url}/v1/requests", json=body) as r:
                assert r.status == 500
                got = await r.json()
            assert got["status"] == "failed" and "boom" in got["error"]
        await h.close()
        # graceful shutdown: closing the server drains the requests it accepted (202)
        rt = ServingRuntime(_slow_catalog(), num_workers=1, buckets=(1,), max_batch=1)
        h = await serve(rt, drain_s=10.0)
        async with aiohttp.ClientSession() as s:
            ids = []
            for x in (5.0, 6.0):
                body = {"workflow": "w", "inputs": {"x": x}}
                async with s.post(f"{h.url}/v1/requests", json=body) as r:
                    assert r.status == 202
                    ids.append((await r.json())["id"])
        closing = asyncio.create_task(h.close())
        await asyncio.sleep(0.15)  # uvicorn has stopped listening; the lifespan drains
        with pytest.raises(ShuttingDown):
            rt.submit("w", {"x": 0.0})
        await closing
        assert [rt.get(i).status for i in ids] == ["done", "done"]
        assert [float(rt.get(i).outputs["y"]) for i in ids] == [5.0, 6.0]
        # stopping with work in flight fails every pending request with ShuttingDown
        rt = ServingRuntime(_slow_catalog(), num_workers=1, buckets=(1,), max_batch=1)
        await rt.start()
        reqs = [rt.submit("w", {"x": float(i)}) for i in range(3)]
        await asyncio.sleep(0.05)
        await rt.stop()
        for r in reqs:
            assert r.status == "failed"
            with pytest.raises(ShuttingDown):
                r.future.result()
        with pytest.raises(ShuttingDown):
            rt.submit("w", {"x": 0.0})

    asyncio.run(main())


def test_a_lone_request_runs_split_over_devices_a_burst_does_not(zoo, zoo_setup):
    """Low load: the denoiser batch of a lone request, with nothing else queued or running,
    runs on the sequence-parallel executor (8 devices); a burst's 4-row batch does not."""
    cat, execs = zoo_setup
    mesh = jax.make_mesh((8,), ("seq",))
    spec = next(s for s in sequence_parallel_specs(zoo, mesh) if s.name == "denoiser")
    split = {"denoiser": NodeExecutor(spec, buckets=(1,), mesh=mesh, shard_batch=False)}

    async def main():
        rt = ServingRuntime(cat, num_workers=2, executors=execs, split_executors=split)
        await rt.start()
        lone = await rt.submit("t2i", _inputs("t2i", 1)).future
        after_lone = dict(rt.stats.splits)
        burst = [rt.submit("t2i", _inputs("t2i", i)) for i in range(4)]
        outs = [await r.future for r in burst]
        await rt.stop()
        return lone, after_lone, outs, rt

    lone, after_lone, outs, rt = asyncio.run(main())
    assert after_lone == {"denoiser": 1} and dict(rt.stats.splits) == {"denoiser": 1}
    assert rt.stats.batches["denoiser"] == 2
    assert 'diffusion_split_batches_total{model="denoiser"} 1' in rt.metrics_text()
    for i, out in [(1, lone)] + list(enumerate(outs)):
        want = _direct(cat, "t2i", _inputs("t2i", i))["image"]
        assert np.abs(want).max() > 0.1
        np.testing.assert_allclose(out["image"], want, rtol=1e-4, atol=1e-5)


def test_runtime_config_errors(zoo_setup):
    cat, execs = zoo_setup
    with pytest.raises(ValueError, match="split_executors: only for micro-serving"):
        ServingRuntime(
            cat, mode="monolithic", num_workers=4, executors=execs, split_executors=execs
        )
    with pytest.raises(ValueError, match=r"split_executors\['encoder'\]: expected the inputs"):
        ServingRuntime(cat, executors=execs, split_executors={"encoder": execs["denoiser"]})
    with pytest.raises(ValueError, match="mode"):
        ServingRuntime(cat, mode="lego", executors=execs)
    with pytest.raises(ValueError, match="num_workers: monolithic serving needs"):
        ServingRuntime(cat, mode="monolithic", num_workers=2, executors=execs)
    with pytest.raises(ValueError, match="replicas: unknown model"):
        ServingRuntime(cat, replicas={"vae": 2}, executors=execs)
    with pytest.raises(ValueError, match="catalog"):
        ServingRuntime(Catalog())
    flat = {m: {4: 1e-3} for m in execs}
    with pytest.raises(ValueError, match=r"batching.profiles\['encoder'\]: expected the exec"):
        ServingRuntime(cat, executors=execs, batching=BatchPolicy(flat | {"encoder": {8: 1.0}}))
    with pytest.raises(ValueError, match="batching.profiles: no per-bucket profile"):
        ServingRuntime(cat, executors=execs, batching=BatchPolicy({"encoder": {4: 1.0}}))


def test_open_loop_client_and_slo(zoo_setup):
    cat, execs = zoo_setup

    async def main():
        rt = ServingRuntime(cat, num_workers=2, executors=execs, max_batch=4)
        h = await serve(rt)
        times = np.linspace(0, 0.2, 6)
        wfs = sorted(cat.workflows)
        out = await run_open_loop(
            h.url, times, lambda i: {"workflow": wfs[i % 4], "inputs": _inputs(wfs[i % 4], i)}
        )
        await h.close()
        return out

    out = asyncio.run(main())
    assert [o.status for o in out] == [200] * 6
    assert slo_attainment(out, 60.0) == 1.0 and slo_attainment(out, 1e-9) == 0.0


def test_arrival_processes():
    key = jax.random.key(0)
    for cv in (0.5, 1.0, 3.0):
        t = gamma_arrivals(200.0, cv, 50.0, key=key)
        gaps = np.diff(t)
        assert abs(len(t) / 50.0 - 200.0) / 200.0 < 0.15
        assert abs(gaps.std() / gaps.mean() - cv) / cv < 0.2
    b = on_off_arrivals(100.0, 40.0, burst_factor=8.0, period=2.0, key=key)
    assert abs(len(b) / 40.0 - 100.0) / 100.0 < 0.15
    on = ((b % 2.0) < 0.5).sum() / 0.5
    off = ((b % 2.0) >= 0.5).sum() / 1.5
    assert 5.0 < on / off < 12.0
    rows = synthetic_trace(50.0, 4.0, key=key)
    assert rows and all(r.base_model_id == "dit-digits" for r in rows)
    assert {trace_to_workflow(r) for r in rows} <= {
        "t2i",
        "t2i_upscale",
        "t2i_checked",
        "control_upscale",
    }
    rows = synthetic_trace(50.0, 4.0, loras=("bold", "thin"), latent_share=0.2, key=key)
    wfs = [trace_to_workflow(r) for r in rows]
    assert set(wfs) == {"t2i", "t2i_upscale", "t2i_checked", "control_upscale"} | {
        "t2i_lora",
        "t2i_latent",
    }
    for r, w in zip(rows, wfs, strict=True):
        assert (w == "t2i_lora") == bool(r.loras) and set(r.loras) <= {"bold", "thin"}
        assert (w == "t2i_latent") == (r.base_model_id == "ldm-digits")
    with pytest.raises(ValueError, match="rate"):
        gamma_arrivals(-1.0, 1.0, 1.0, key=key)
    with pytest.raises(ValueError, match="cv"):
        gamma_arrivals(1.0, 0.0, 1.0, key=key)


@pytest.mark.parametrize("mode", ["micro", "monolithic"])
def test_memory_budget_loads_what_it_must_and_answers_stay_right(zoo_setup, mode):
    # one worker whose memory holds the largest workflow: a monolithic replica must swap
    # whole workflows when the request's workflow changes; micro-serving swaps models
    cat, execs = zoo_setup
    host = {m: jax.tree.map(np.asarray, cat.models[m].params) for m in execs}
    loaded = []

    def loader(m):
        loaded.append(m)
        return jax.tree.map(jnp.asarray, host[m])

    budget = max(
        sum(cat.models[m].param_bytes for m in {n.model for n in w.workflow.nodes})
        for w in cat.workflows.values()
    )
    names = ["t2i", "control_upscale", "t2i", "t2i_checked", "control_upscale"]

    async def main():
        rt = ServingRuntime(
            cat,
            mode=mode,
            num_workers=1,
            executors=execs,
            max_batch=4,
            memory_bytes=budget,
            loader=loader,
            load_s=dict.fromkeys(execs, 0.01),
        )
        await rt.start()
        outs = []
        for i, w in enumerate(names):  # one at a time: every switch is visible
            outs.append(await rt.submit(w, _inputs(w, i)).future)
        text = rt.metrics_text()
        await rt.stop()
        return rt, outs, text

    rt, outs, text = asyncio.run(main())
    for i, (w, out) in enumerate(zip(names, outs, strict=True)):
        want = _direct(cat, w, _inputs(w, i))
        for k in want:
            np.testing.assert_allclose(out[k], want[k], rtol=1e-4, atol=1e-5)
    assert rt.stats.loads >= 2 and f"diffusion_loads_total {rt.stats.loads}" in text
    if mode == "monolithic":  # a replica loads all of its workflow's models
        assert set(loaded) >= {"encoder", "denoiser", "classifier"}
    with pytest.raises(ValueError, match="memory_bytes: also pass loader"):
        ServingRuntime(cat, mode=mode, executors=execs, memory_bytes=budget)
    with pytest.raises(ValueError, match="memory_bytes: .* cannot hold"):
        ServingRuntime(
            cat,
            mode=mode,
            executors=execs,
            memory_bytes=10,
            loader=loader,
            load_s=dict.fromkeys(execs, 0.01),
        )
