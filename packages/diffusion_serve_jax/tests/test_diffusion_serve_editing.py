"""InstGenIE editing: the Pallas cache-gather attention against its reference, cached masked
edits against full recomputation, the template store, step-level batching and balancing."""

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
    StaleCacheError,
    TemplateStore,
    balance,
    build_template_cache,
    cache_attention,
    cache_attention_reference,
    cached_edit,
    edit_cost,
    edit_reference,
    load_digits_dataset,
    make_schedule,
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


def test_cache_attention_bad_inputs():
    q, kc, vc, kn, vn = _qkv(0)
    keep, valid = jnp.ones((B, N)), jnp.ones((B, M))
    with pytest.raises(ValueError, match="keep: expected"):
        cache_attention_reference(q, kc, vc, keep[:, :3], kn, vn, valid)
    with pytest.raises(ValueError, match="k_cache: expected"):
        cache_attention_reference(q, kc[..., :4], vc, keep, kn, vn, valid)
    with pytest.raises(ValueError, match="block_n: must divide"):
        cache_attention(q, kc, vc, keep, kn, vn, valid, block_n=5, interpret=True)


@pytest.fixture(scope="module")
def editing():
    rngs = nnx.Rngs(0)
    dit = DiT(width=16, depth=2, heads=2, cond_dim=16, rngs=rngs)
    enc = ConditionEncoder(dim=16, rngs=rngs)
    # give the zero-initialised output/modulation layers weights so the test is not trivial
    st_ = nnx.state(dit)
    nnx.update(
        dit, jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(5), a.shape), st_)
    )
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


def _requests(x, n=6):
    reqs = []
    for i in range(n):
        m = np.zeros((8, 8))
        m[: 2 * (1 + i % 3), 2:6] = 1
        reqs.append((0.002 * i, EditRequest(f"t{i % 2}", m, (3 * i) % 10, i)))
    return reqs


@pytest.mark.parametrize("compute", ["masked", "full"])
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
    kw = dict(steps=STEPS, compute=compute, max_batch=4, batch_buckets=(4,), token_buckets=(16,))
    cont = EditEngine(dit, enc, SCHED, store, batching="continuous", **kw).run(reqs)
    stat = EditEngine(dit, enc, SCHED, store, batching="static", **kw).run(reqs)
    one = cached_edit if compute == "masked" else edit_reference
    for (_, req), a, b in zip(reqs, cont, stat, strict=True):
        want = one(
            dit, enc, SCHED, store.get(req.template), req.mask, req.label, req.seed, steps=STEPS
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
