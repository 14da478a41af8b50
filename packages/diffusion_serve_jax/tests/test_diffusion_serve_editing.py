"""InstGenIE editing: the Pallas cache-gather attention against its reference, cached masked
edits against full recomputation, the template store (memory + disk tier), step-level
batching, balancing, and the HTTP editing API (uvicorn on a localhost socket, aiohttp
client): submit / wait / poll, 4xx naming the bad field, 429 when full, 503 when stopping,
no accepted edit dropped."""

import asyncio
import contextlib
import threading

import aiohttp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_serve_jax import (
    DiT,
    EditEngine,
    EditRequest,
    EditService,
    StaleCacheError,
    TemplateStore,
    balance,
    block_plan,
    build_template_cache,
    cache_attention,
    cache_attention_reference,
    cached_edit,
    edit_cost,
    edit_reference,
    load_digits_dataset,
    make_app,
    make_schedule,
    serve,
    weights_version,
)
from diffusion_serve_jax._models import ConditionEncoder
from testkit import assert_trees_close

B, M, N, H, D = 2, 4, 16, 2, 8
SCHED = make_schedule(10)
STEPS = 3


def _qkv(seed):
    ks = jax.random.split(jax.random.key(seed), 5)
    q = jax.random.normal(ks[0], (B, M, H, D))
    kc, vc = jax.random.normal(ks[1], (B, N, H, D)), jax.random.normal(ks[2], (B, N, H, D))
    kn, vn = jax.random.normal(ks[3], (B, M, H, D)), jax.random.normal(ks[4], (B, M, H, D))
    return q, kc, vc, kn, vn


@settings(max_examples=4)
@given(st.integers(0, 2**16), st.lists(st.booleans(), min_size=N, max_size=N), st.integers(1, M))
def test_pallas_interpret_matches_reference(seed, keep_bits, n_valid):
    q, kc, vc, kn, vn = _qkv(seed)
    keep = jnp.asarray([keep_bits, keep_bits[::-1]], jnp.float32)
    valid = (jnp.arange(M)[None, :] < jnp.array([[n_valid], [M]])).astype(jnp.float32)
    want = cache_attention_reference(q, kc, vc, keep, kn, vn, valid)
    got = cache_attention(q, kc, vc, keep, kn, vn, valid, block_n=8, interpret=True)
    assert_trees_close(got, want, rtol=1e-5, atol=1e-5)
    tiled = cache_attention(q, kc, vc, keep, kn, vn, valid, block_n=8, block_m=2, interpret=True)
    assert_trees_close(tiled, want, rtol=1e-5, atol=1e-5)


def test_cache_attention_equals_plain_attention_over_the_kept_set():
    """Closed form: keeping every cached token and no new ones is ordinary attention."""
    q, kc, vc, kn, vn = _qkv(1)
    from diffusion_serve_jax import attention

    got = cache_attention_reference(q, kc, vc, jnp.ones((B, N)), kn, vn, jnp.zeros((B, M)))
    assert_trees_close(got, attention(q, kc, vc), rtol=1e-5, atol=1e-6)
    grads = jax.grad(
        lambda q: cache_attention_reference(
            q, kc, vc, jnp.ones((B, N)), kn, vn, jnp.ones((B, M))
        ).sum()
    )(q)
    assert np.all(np.isfinite(grads))


@pytest.mark.shape_checks_off  # the library's own error, not jaxtyping's
def test_cache_attention_bad_inputs():
    q, kc, vc, kn, vn = _qkv(0)
    keep, valid = jnp.ones((B, N)), jnp.ones((B, M))
    with pytest.raises(ValueError, match="keep: expected"):
        cache_attention_reference(q, kc, vc, keep[:, :3], kn, vn, valid)
    with pytest.raises(ValueError, match="k_cache: expected"):
        cache_attention_reference(q, kc[..., :4], vc, keep, kn, vn, valid)
    with pytest.raises(ValueError, match="block_n: must divide"):
        cache_attention(q, kc, vc, keep, kn, vn, valid, block_n=5, interpret=True)
    with pytest.raises(ValueError, match="block_m: must divide"):
        cache_attention(q, kc, vc, keep, kn, vn, valid, block_m=3, interpret=True)


@pytest.fixture(scope="module")
def editing():
    rngs = nnx.Rngs(0)
    dit = DiT(width=16, depth=2, heads=2, cond_dim=16, rngs=rngs)
    enc = ConditionEncoder(dim=16, rngs=rngs)
    # give the zero-initialised output/modulation layers weights so the test is not trivial
    # (one jitted program: eagerly, each leaf shape would compile its own random draw)
    perturb = jax.jit(
        lambda st_: jax.tree.map(
            lambda a: a + 0.1 * jax.random.normal(jax.random.key(5), a.shape), st_
        )
    )
    nnx.update(dit, perturb(nnx.state(dit)))
    x, y = load_digits_dataset()
    ver = weights_version(nnx.state(dit))
    cache = build_template_cache(
        dit, enc, SCHED, x[0], int(y[0]), steps=STEPS, key=jax.random.key(1), version=ver
    )
    return dit, enc, cache, x, y, ver


def test_full_mask_cached_edit_equals_full_recompute(editing):
    dit, enc, cache, x, *_ = editing
    mask = np.ones((8, 8))
    a = edit_reference(dit, enc, SCHED, cache, mask, 3, 7, steps=STEPS)
    b = cached_edit(dit, enc, SCHED, cache, mask, 3, 7, steps=STEPS)
    np.testing.assert_allclose(b, a, atol=1e-5)


@settings(max_examples=3)
@given(st.integers(0, 3), st.integers(0, 3), st.integers(1, 2), st.integers(1, 2))
def test_partial_edits_keep_the_template_outside_the_mask(editing, r, c, h, w):
    """Property: outside the mask the output is the template, exactly, for both paths; the
    padded Pallas path equals the unpadded reference path."""
    dit, enc, cache, x, *_ = editing
    mask = np.zeros((8, 8))
    mask[2 * r : 2 * (r + h), 2 * c : 2 * (c + w)] = 1
    out = cached_edit(dit, enc, SCHED, cache, mask, 5, 1, steps=STEPS)
    ref = edit_reference(dit, enc, SCHED, cache, mask, 5, 1, steps=STEPS)
    np.testing.assert_array_equal(out[mask == 0], x[0][mask == 0])
    np.testing.assert_array_equal(ref[mask == 0], x[0][mask == 0])
    assert np.all(np.abs(out) <= 1 + 1e-5)
    padded = cached_edit(dit, enc, SCHED, cache, mask, 5, 1, steps=STEPS, impl="pallas", pad_to=16)
    np.testing.assert_allclose(padded, out, atol=1e-5)


def test_block_plan_all_full_blocks_equals_full_recompute(editing):
    """Per-request block selection: recomputing every block in full is full recomputation;
    any plan keeps the template outside the mask."""
    dit, enc, cache, x, *_ = editing
    mask = np.zeros((8, 8))
    mask[2:8, :] = 1
    ref = edit_reference(dit, enc, SCHED, cache, mask, 4, 2, steps=STEPS)
    outs = [
        cached_edit(dit, enc, SCHED, cache, mask, 4, 2, steps=STEPS, full_blocks=fb)
        for fb in range(len(dit.blocks) + 1)
    ]
    np.testing.assert_allclose(outs[-1], ref, atol=1e-5)
    assert np.abs(outs[0] - ref).max() > 1e-4  # the cache is an approximation: plans differ
    for out in outs:
        np.testing.assert_array_equal(out[mask == 0], x[0][mask == 0])
    with pytest.raises(ValueError, match="full_blocks"):
        cached_edit(dit, enc, SCHED, cache, mask, 4, 2, steps=STEPS, full_blocks=3)


@settings(max_examples=12)
@given(
    st.integers(1, 15),
    st.floats(1e-4, 1.0),
    st.floats(0.0, 1.0),
)
def test_block_plan_properties(m, compute, load):
    """Property: the plan is in 0..depth, never grows with the mask, caches every block when
    loading is free, and a bigger mask never needs more full blocks."""
    kw = dict(compute_per_token=compute, load_per_token=load)
    fb = block_plan(m, 16, 4, **kw)
    assert 0 <= fb <= 4
    assert block_plan(m + 1, 16, 4, **kw) <= fb
    assert block_plan(m, 16, 4, compute_per_token=compute, load_per_token=0.0) == 0
    assert block_plan(m, 16, 4, compute_per_token=compute, load_per_token=1e6 * compute) == 4
    with pytest.raises(ValueError, match="num_masked"):
        block_plan(17, 16, 4, **kw)


def test_template_store_bounds_evicts_and_rejects_stale(editing):
    dit, enc, cache, x, y, ver = editing
    store = TemplateStore(max_bytes=int(cache.nbytes * 1.5), version=ver)
    store.register("a", lambda: cache)
    store.register("b", lambda: cache)
    store.get("a"), store.get("a"), store.get("b")
    assert (store.hits, store.misses, store.evictions) == (1, 2, 1)
    assert store.nbytes <= store.max_bytes
    with pytest.raises(KeyError, match="template: unknown"):
        store.get("zzz")
    stale = TemplateStore(max_bytes=10**8, version="other")
    stale.register("a", lambda: cache)
    with pytest.raises(StaleCacheError, match="cache built for weights"):
        stale.get("a")
    with pytest.raises(ValueError, match="max_bytes"):
        TemplateStore(max_bytes=0, version=ver)


def test_template_store_spills_to_disk_and_never_serves_a_stale_file(editing, tmp_path):
    dit, enc, cache, x, y, ver = editing
    built = []

    def builder(name, version=ver):
        built.append(name)
        return cache._replace(version=version, xs=cache.xs + len(built))

    store = TemplateStore(max_bytes=int(cache.nbytes * 1.5), version=ver, spill_dir=tmp_path)
    store.register("a", lambda: builder("a"))
    store.register("b/c", lambda: builder("b/c"))
    first = store.get("a")
    store.get("b/c")  # evicts "a" to disk
    assert store.spill_path("a").exists() and store.spills == 1
    again = store.get("a")  # read back from disk, not rebuilt; evicts "b/c"
    assert built == ["a", "b/c"] and store.disk_hits == 1
    assert_trees_close(tuple(again), tuple(first))
    assert store.nbytes <= store.max_bytes
    # other weights: the old files are deleted, the template rebuilt under the new version
    new = TemplateStore(max_bytes=10**8, version="v2", spill_dir=tmp_path)
    new.register("a", lambda: builder("a", "v2"))
    assert new.get("a").version == "v2" and built[-1] == "a" and new.stale_dropped == 1
    assert not store.spill_path("a").exists()
    # a file whose stamp disagrees with its name is dropped too
    store.register("t", lambda: builder("t", "v2"))
    np.savez(store.spill_path("t"), k=cache.k, v=cache.v, xs=cache.xs, label=1, version="v2")
    with pytest.raises(StaleCacheError):
        store.get("t")
    assert not store.spill_path("t").exists() and store.stale_dropped == 1
    with pytest.raises(ValueError, match="version"):
        TemplateStore(max_bytes=10, version="a/b")


def _requests(x, n=6):
    reqs = []
    for i in range(n):
        m = np.zeros((8, 8))
        m[: 2 * (1 + i % 3), 2:6] = 1
        reqs.append((0.002 * i, EditRequest(f"t{i % 2}", m, (3 * i) % 10, i)))
    return reqs


def _plan(m):  # per-request block plan: small masks recompute more blocks in full
    return 2 if m <= 2 else (1 if m <= 4 else 0)


@pytest.mark.parametrize("compute", ["masked", "full", "planned"])
def test_continuous_batching_matches_static_and_single_request_edits(editing, compute):
    dit, enc, cache, x, y, ver = editing
    store = TemplateStore(max_bytes=10**8, version=ver)
    for i in range(2):
        store.register(
            f"t{i}",
            lambda i=i: build_template_cache(
                dit, enc, SCHED, x[i], int(y[i]), steps=STEPS, key=jax.random.key(i), version=ver
            ),
        )
    reqs = _requests(x)
    plan = _plan if compute == "planned" else None
    kw = dict(steps=STEPS, max_batch=4, batch_buckets=(4,), token_buckets=(16,), plan=plan)
    kw["compute"] = "full" if compute == "full" else "masked"
    cont = EditEngine(dit, enc, SCHED, store, batching="continuous", **kw)
    got = cont.run(reqs)
    stat = EditEngine(dit, enc, SCHED, store, batching="static", **kw).run(reqs)
    if plan is not None:
        assert dict(cont.stats.plans) == {2: 2, 1: 2, 0: 2}
    for (_, req), a, b in zip(reqs, got, stat, strict=True):
        tmpl = store.get(req.template)
        if compute == "full":
            want = edit_reference(dit, enc, SCHED, tmpl, req.mask, req.label, req.seed, steps=STEPS)
        else:
            fb = 0 if plan is None else plan(int(req.mask.sum()) // 4)
            want = cached_edit(
                dit, enc, SCHED, tmpl, req.mask, req.label, req.seed, steps=STEPS, full_blocks=fb
            )
        np.testing.assert_allclose(a[1], want, atol=1e-5)
        np.testing.assert_allclose(b[1], want, atol=1e-5)
        assert a[0] > 0 and b[0] > 0


def test_engine_validates_requests(editing):
    dit, enc, cache, x, y, ver = editing
    store = TemplateStore(max_bytes=10**8, version=ver)
    store.register("t", lambda: cache)
    eng = EditEngine(dit, enc, SCHED, store, steps=STEPS, max_batch=4, batch_buckets=(4,))
    bad = [
        (EditRequest("t", np.ones((4, 4)), 1), ValueError, "mask: expected shape"),
        (EditRequest("t", np.full((8, 8), 2.0), 1), ValueError, "in \\[0, 1\\]"),
        (EditRequest("t", np.zeros((8, 8)), 1), ValueError, "mask: is empty"),
        (EditRequest("nope", np.ones((8, 8)), 1), KeyError, "template: unknown"),
        (EditRequest("t", np.ones((8, 8)), 12), ValueError, "label"),
    ]
    for req, err, msg in bad:
        with pytest.raises(err, match=msg):
            eng.run([(0.0, req)])
    with pytest.raises(ValueError, match="compute"):
        EditEngine(dit, enc, SCHED, store, steps=STEPS, compute="half")


def test_mask_aware_balancing_evens_out_cost(editing):
    dit = editing[0]
    big, small = np.ones((8, 8)), np.zeros((8, 8))
    small[:2, :2] = 1
    reqs = [(0.0, EditRequest("t", big if i % 2 == 0 else small, 1)) for i in range(8)]
    cost = edit_cost(dit, compute_per_token=1.0, load_per_token=0.1)
    loads = {}
    for policy in ("round_robin", "mask_aware"):
        groups = balance(reqs, 2, policy=policy, cost=cost)
        assert sorted(i for g in groups for i in g) == list(range(8))
        loads[policy] = [sum(cost(reqs[i][1]) for i in g) for g in groups]
    assert max(loads["mask_aware"]) < max(loads["round_robin"])
    with pytest.raises(ValueError, match="policy"):
        balance(reqs, 2, policy="random", cost=cost)


# -- HTTP editing API ------------------------------------------------------------------------------
def _service(editing, gate=None, **kw):
    dit, enc, cache, _, _, ver = editing
    store = TemplateStore(max_bytes=10**8, version=ver)
    store.register("digit0", lambda: cache)
    if gate is not None:
        store.register("slow", lambda: (gate.wait(10), cache)[1])
    eng = EditEngine(
        dit,
        enc,
        SCHED,
        store,
        steps=STEPS,
        max_batch=kw.pop("max_batch", 2),
        batch_buckets=(4,),  # the shapes the batching tests compiled
        token_buckets=(16,),
        batching=kw.pop("batching", "continuous"),
    )
    return EditService(eng, **kw)


def _mask(rows=2):
    m = np.zeros((8, 8), int)
    m[:rows, 2:6] = 1
    return m


@contextlib.asynccontextmanager
async def _client(svc):
    """An aiohttp client session on `svc` served by uvicorn on a localhost socket."""
    h = await serve(editor=svc)
    try:
        async with aiohttp.ClientSession(base_url=h.url) as client:
            yield client
    finally:
        await h.close()


async def _poll_done(client, job_id, timeout=30.0):
    for _ in range(int(timeout / 0.01)):
        r = await client.get(f"/v1/edits/{job_id}")
        body = await r.json()
        if body["status"] in ("done", "failed"):
            return r.status, body
        await asyncio.sleep(0.01)
    raise AssertionError(f"edit {job_id} never finished")


def test_edit_http_wait_poll_and_equal_to_direct_cached_edit(editing):
    dit, enc, cache, _, _, ver = editing
    svc = _service(editing)

    async def main():
        async with _client(svc) as client:
            r = await client.get("/v1/templates")
            assert (await r.json()) == {"templates": ["digit0"], "version": ver}
            body = {"template": "digit0", "mask": _mask().tolist(), "prompt": "a seven", "seed": 3}
            r = await client.post("/v1/edits", json={**body, "wait": True})
            assert r.status == 200, await r.text()
            waited = await r.json()
            r = await client.post("/v1/edits", json={**body, "mask": (_mask(4) > 0).tolist()})
            assert r.status == 202
            status, polled = await _poll_done(client, (await r.json())["id"])
            assert status == 200 and polled["status"] == "done" and polled["latency_ms"] > 0
            metrics = await (await client.get("/metrics")).text()
            assert 'diffusion_edits_total{status="done"} 2' in metrics
            health = await (await client.get("/healthz")).json()
            assert health == {"status": "ok", "edit_queue": 0}
            return waited, polled

    waited, polled = asyncio.run(main())
    for body, rows in ((waited, 2), (polled, 4)):
        want = cached_edit(dit, enc, SCHED, cache, _mask(rows), 7, 3, steps=STEPS)
        np.testing.assert_allclose(np.asarray(body["image"]), want, atol=1e-5)


def test_edit_http_bad_requests_name_the_field(editing):
    svc = _service(editing)
    ok = {"template": "digit0", "mask": _mask().tolist(), "label": 3}
    bad = [
        ({**ok, "mask": np.ones((4, 4)).tolist()}, 400, "mask: expected shape"),
        ({**ok, "mask": [["a"] * 8] * 8}, 400, "mask: expected numbers"),
        ({**ok, "mask": [[0] * 8] * 7 + [[0] * 3]}, 400, "mask:"),
        ({**ok, "mask": (2 * _mask()).tolist()}, 400, "mask: values must be"),
        ({**ok, "mask": np.zeros((8, 8)).tolist()}, 400, "mask: is empty"),
        ({k: v for k, v in ok.items() if k != "mask"}, 400, "mask: required"),
        ({**ok, "template": "nope"}, 404, "template: unknown"),
        ({**ok, "template": 5}, 400, "template: expected"),
        ({**ok, "label": 12}, 400, "label: expected a digit"),
        ({**ok, "label": "3"}, 400, "label: expected an integer"),
        ({**ok, "prompt": "three"}, 400, "label, prompt: give exactly one"),
        ({"template": "digit0", "mask": ok["mask"], "prompt": "a cat"}, 400, "prompt:"),
        ({**ok, "seed": -1}, 400, "seed: expected"),
        ({**ok, "colour": "red"}, 400, "body: unexpected fields"),
        ([1, 2], 400, "body: expected a JSON object"),
    ]

    async def main():
        async with _client(svc) as client:
            for body, status, msg in bad:
                r = await client.post("/v1/edits", json=body)
                assert r.status == status, (body, await r.text())
                assert msg in (await r.json())["error"], (msg, await r.text())
            r = await client.post("/v1/edits", data=b"{not json")
            assert r.status == 400 and "body" in (await r.json())["error"]
            r = await client.get("/v1/edits/deadbeef")
            assert r.status == 404 and "id: unknown" in (await r.json())["error"]
            assert svc.counts["accepted"] == 0

    asyncio.run(main())
    with pytest.raises(ValueError, match="runtime, editor"):
        make_app()


def test_edit_http_429_when_full_and_every_accepted_edit_finishes(editing):
    """The worker is held inside the first admission; with one queue slot, the third request
    at the latest is refused with 429 + Retry-After, and every accepted one still completes."""
    gate = threading.Event()
    svc = _service(editing, gate=gate, queue_limit=1, max_batch=1, batching="static")
    body = {"template": "slow", "mask": _mask().tolist(), "label": 1}

    async def main():
        async with _client(svc) as client:
            accepted, refused = [], None
            for _ in range(3):
                r = await client.post("/v1/edits", json=body)
                if r.status == 429:
                    refused = r
                    break
                assert r.status == 202
                accepted.append((await r.json())["id"])
                await asyncio.sleep(0.05)
            assert refused is not None and 1 <= len(accepted) <= 2
            assert int(refused.headers["Retry-After"]) >= 1
            assert "queue full" in (await refused.json())["error"]
            gate.set()
            finals = [await _poll_done(client, i) for i in accepted]
            assert all(b["status"] == "done" and len(b["image"]) == 8 for _, b in finals)
            assert svc.counts["rejected"] >= 1

    asyncio.run(main())


def test_edit_http_stop_fails_inflight_explicitly_then_503(editing):
    gate = threading.Event()
    svc = _service(editing, gate=gate, max_batch=1, batching="static")
    body = {"template": "slow", "mask": _mask().tolist(), "label": 1}

    async def main():
        async with _client(svc) as client:
            ids = []
            for _ in range(2):
                r = await client.post("/v1/edits", json=body)
                assert r.status == 202
                ids.append((await r.json())["id"])
            timer = threading.Timer(0.2, gate.set)  # the held worker finishes its call
            timer.start()
            await svc.stop()
            timer.join()
            for i in ids:
                status, b = await _poll_done(client, i)
                assert b["status"] == "failed" and "shutting down" in b["error"]
            r = await client.post("/v1/edits", json=body)
            assert r.status == 503 and "not running" in (await r.json())["error"]
            await svc.start()  # the app's cleanup stops it again

    asyncio.run(main())
