"""GPipe over a (dp=2, pp=4) mesh: equals the unpipelined model; low-rank stage links."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import P
from jax.sharding import NamedSharding

import grad_compress as gc
from grad_compress import _pipeline
from testkit import assert_trees_close

DP, S, MICRO, MB, T, D = 2, 4, 3, 2, 4, 8  # micro-batch rows = MB * T = 8, features D = 8
MESH = jax.make_mesh((DP, S), ("dp", "pp"))
SPECS = {"inp": P(), "out": P(), "stages": P("pp")}


def make_problem(seed: int = 0):
    k = jax.random.split(jax.random.key(seed), 6)
    params = {
        "inp": jax.random.normal(k[0], (5, D)) * 0.5,
        "stages": {
            "w": jax.random.normal(k[1], (S, D, D)) * 0.4,
            "b": jax.random.normal(k[2], (S, D)) * 0.1,
        },
        "out": jax.random.normal(k[3], (D, 3)) * 0.5,
    }
    x = jax.random.normal(k[4], (DP * MICRO * MB, T, 5))
    y = jax.random.normal(k[5], (DP * MICRO * MB, T, 3))
    return params, x, y


def stage_fn(p, h):
    return h + jnp.tanh(h @ p["w"] + p["b"][None, None])


def reference_loss(params, x, y):
    """The same model without a pipeline: every stage in sequence on the whole batch."""
    h = x @ params["inp"]
    for s in range(S):
        h = stage_fn(jax.tree.map(lambda a, s=s: a[s], params["stages"]), h)
    return jnp.mean((h @ params["out"] - y) ** 2)


def pipelined_step(max_rank=None, buckets=None, raw_when_cheaper=False):
    def local_loss(params, x, y, ranks):
        stage = jax.tree.map(lambda a: a[0], params["stages"])
        h = (x @ params["inp"]).reshape(MICRO, MB, T, D)
        out, stats = gc.gpipe(
            stage_fn,
            stage,
            h,
            axis_name="pp",
            ranks=ranks,
            max_rank=max_rank,
            buckets=buckets,
            raw_when_cheaper=raw_when_cheaper,
            entropy_scale=0.0,
        )
        last = jax.lax.axis_index("pp") == S - 1
        err = (out @ params["out"] - y.reshape(MICRO, MB, T, 3)) ** 2
        return jnp.where(last, jnp.mean(err), 0.0), stats

    def local(params, x, y, ranks):
        (loss, stats), g = jax.value_and_grad(local_loss, has_aux=True)(params, x, y, ranks)
        g = dict(g, inp=jax.lax.psum(g["inp"], "pp"), out=jax.lax.psum(g["out"], "pp"))
        g = jax.lax.pmean(g, "dp")
        loss = jax.lax.pmean(jax.lax.psum(loss, "pp"), "dp")
        return loss, g, jax.tree.map(lambda a: a[None, None], stats)

    f = jax.shard_map(
        local,
        mesh=MESH,
        in_specs=(SPECS, P("dp"), P("dp"), P()),
        out_specs=(P(), SPECS, P("dp", "pp")),
        check_vma=False,
    )
    return jax.jit(f)


def place(params, x, y):
    shard = jax.tree.map(
        lambda s: NamedSharding(MESH, s), SPECS, is_leaf=lambda a: isinstance(a, P)
    )
    return jax.device_put(params, shard), *jax.device_put((x, y), NamedSharding(MESH, P("dp")))


UNCOMPRESSED = pipelined_step()
COMPRESSED = pipelined_step(max_rank=D)


def test_pipeline_loss_and_grads_equal_unpipelined_model():
    params, x, y = make_problem(0)
    loss, grads, stats = UNCOMPRESSED(*place(params, x, y), None)
    ref_loss, ref_grads = jax.value_and_grad(reference_loss)(params, x, y)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
    assert_trees_close(grads, ref_grads, rtol=1e-4, atol=1e-5)
    # exact traffic: MICRO sends of an (MB*T, D) fp32 activation each way per boundary
    send = MB * T * D * 4
    want = np.asarray([[MICRO * send * ((s < S - 1) + (s > 0)) for s in range(S)]] * DP)
    np.testing.assert_array_equal(np.asarray(stats.p2p_bytes), want)
    assert np.all(np.asarray(stats.bits) > 0) and np.all(np.asarray(stats.std) > 0)


def link_bytes(width):
    """One send of boundary factors cut to `width` columns (P: rows x w, Qt: D x w, fp32)."""
    return width * (MB * T + D) * 4


RAW = MB * T * D * 4  # one send of the (MB*T, D) fp32 activation itself


def test_full_rank_links_reproduce_uncompressed_and_low_rank_counts_factor_bytes():
    params, x, y = make_problem(1)
    placed = place(params, x, y)
    loss, grads, _ = UNCOMPRESSED(*placed, None)
    full_loss, full_grads, full_stats = COMPRESSED(*placed, jnp.full((S,), D, jnp.int32))
    assert float(full_loss) == pytest.approx(float(loss), rel=1e-4)
    assert_trees_close(full_grads, grads, rtol=1e-3, atol=1e-4)
    ranks = jnp.asarray([1, 2, 3, 1], jnp.int32)  # boundary s -> s+1 uses ranks[s]
    low_loss, low_grads, low_stats = COMPRESSED(*placed, ranks)
    assert abs(float(low_loss) - float(loss)) > 1e-3  # rank-1..3 links do lose information
    # stage s sends its boundary's width forward and boundary s - 1's width backward
    want = [MICRO * link_bytes(w) for w in (1, 1 + 2, 2 + 3, 3)]
    np.testing.assert_array_equal(np.asarray(low_stats.p2p_bytes)[0], want)
    np.testing.assert_array_equal(np.asarray(full_stats.p2p_messages)[0], [6, 12, 12, 6])


@pytest.fixture
def sends(monkeypatch):
    """Every payload the links hand to `ppermute`, as (sending stage, receiving stage, bytes),
    recorded where the send actually runs (bubble ticks and unused branches record nothing)."""
    sent: list[tuple[int, int, int]] = []
    link_send = _pipeline._link_send

    def recorded(payload, axis_name, perm):
        n = sum(a.size * jnp.dtype(a.dtype).itemsize for a in jax.tree.leaves(payload))
        (src, dst), *others = perm
        assert not others  # one boundary per ppermute
        record = lambda i, _: sent.append((src, dst, n)) if int(i) == src else None
        # the payload argument ties the callback to this send (a loop-invariant one is hoisted)
        tie = jax.tree.leaves(payload)[0].reshape(-1)[0]
        jax.debug.callback(record, jax.lax.axis_index(axis_name), tie)
        return link_send(payload, axis_name, perm)

    monkeypatch.setattr(_pipeline, "_link_send", recorded)
    return sent


def check_sends(sent, stats, per_boundary):
    """Each boundary b sends exactly `per_boundary[b]` bytes MICRO times per direction and dp
    replica (no send on the bubble ticks), and `PipelineStats` counts exactly those payloads."""
    for b, n in enumerate(per_boundary):
        for src, dst in ((b, b + 1), (b + 1, b)):
            got = sorted(m for s, d, m in sent if (s, d) == (src, dst))
            assert got == [n] * (DP * MICRO), (src, dst)
    assert {(s, d) for s, d, _ in sent} <= {(b, b + 1) for b in range(S - 1)} | {
        (b + 1, b) for b in range(S - 1)
    }
    on_wire = [sum(m for s, _, m in sent if s == stage) / DP for stage in range(S)]
    np.testing.assert_array_equal(np.asarray(stats.p2p_bytes)[0], on_wire)
    np.testing.assert_array_equal(np.asarray(stats.p2p_bytes)[1], on_wire)


@pytest.mark.parametrize(
    "buckets, ranks, widths",
    [
        (None, [1, 2, 3, 1], [1, 2, 3]),  # unequal ranks: each boundary sends its own width
        (None, [2, 2, 2, 8], [2, 2, 2]),  # ranks[S - 1] names no boundary: ignored
        (2, [1, 5, 2, 1], [4, 8, 4]),  # buckets (4, 8): the smallest holding each rank
    ],
)
def test_each_boundary_sends_its_own_width_only_on_real_ticks(sends, buckets, ranks, widths):
    params, x, y = make_problem(2)
    loss, grads, stats = pipelined_step(max_rank=D, buckets=buckets)(
        *place(params, x, y), jnp.asarray(ranks, jnp.int32)
    )
    jax.effects_barrier()
    check_sends(sends, stats, [link_bytes(w) for w in widths])
    if widths == [1, 2, 3]:  # cut links == uncut ones (all max_rank columns) up to rounding
        loss_u, grads_u, _ = pipelined_step(max_rank=D, buckets=1)(
            *place(params, x, y), jnp.asarray(ranks, jnp.int32)
        )
        assert float(loss) == pytest.approx(float(loss_u), rel=1e-5)
        assert_trees_close(grads, grads_u, rtol=1e-4, atol=1e-6)


def test_uncompressed_links_send_the_activation_only_on_real_ticks(sends):
    params, x, y = make_problem(3)
    _, _, stats = pipelined_step()(*place(params, x, y), None)  # traced with the recorder
    jax.effects_barrier()
    check_sends(sends, stats, [RAW] * (S - 1))
    np.testing.assert_array_equal(np.asarray(stats.p2p_messages)[0], [3, 6, 6, 3])


def test_raw_when_cheaper_sends_the_activation_at_and_above_break_even(sends):
    """rows = features = 8: rank-r factors cost r * 16 values, the activation 64, so ranks >= 4
    send the activation itself (exact: full-rank raw links == uncompressed)."""
    params, x, y = make_problem(4)
    placed = place(params, x, y)
    loss, grads, stats = UNCOMPRESSED(*placed, None)
    sends.clear()
    raw_links = pipelined_step(max_rank=D, raw_when_cheaper=True)  # traced with the recorder
    raw_loss, raw_grads, raw_stats = raw_links(*placed, jnp.full((S,), D, jnp.int32))
    jax.effects_barrier()
    check_sends(sends, raw_stats, [RAW] * (S - 1))
    assert float(raw_loss) == pytest.approx(float(loss), rel=1e-6)
    assert_trees_close(raw_grads, grads, rtol=1e-5, atol=1e-7)
    for field in ("p2p_bytes", "p2p_messages"):
        np.testing.assert_array_equal(getattr(raw_stats, field), getattr(stats, field))
    sends.clear()
    ranks = jnp.asarray([4, 3, 2, 8], jnp.int32)  # raw at the break-even rank 4, then factors
    mixed_loss, _, mixed_stats = raw_links(*placed, ranks)
    jax.effects_barrier()
    check_sends(sends, mixed_stats, [RAW, link_bytes(3), link_bytes(2)])
    np.testing.assert_array_equal(np.asarray(mixed_stats.p2p_messages)[0], [3, 3 + 6, 6 + 6, 6])
    factor_loss, _, _ = COMPRESSED(*placed, ranks)  # rank 4 as factors: lossy, so different
    assert float(mixed_loss) != float(factor_loss)


LINK = jax.jit(
    jax.shard_map(
        lambda x, r: gc.stage_send(x[0, 0], axis_name="pp", ranks=r, max_rank=D)[None, None],
        mesh=MESH,
        in_specs=(P("dp", "pp"), P()),
        out_specs=P("dp", "pp"),
        check_vma=False,
    )
)


@given(seed=st.integers(0, 2**16), rank=st.integers(1, 4))
def test_link_is_exact_for_activations_of_rank_at_most_r(seed, rank):
    k1, k2 = jax.random.split(jax.random.key(seed))
    a = jax.random.normal(k1, (DP, S, 12, 4))
    b = jax.random.normal(k2, (DP, S, 4, D))
    mask = (jnp.arange(4) < rank).astype(a.dtype)[None, None, None, :]
    x = jnp.einsum("dsir,dsrj->dsij", a * mask, b)  # every stage's activation has rank <= rank
    xs = jax.device_put(x, NamedSharding(MESH, P("dp", "pp")))
    got = np.asarray(LINK(xs, jnp.full((S,), rank)))
    np.testing.assert_allclose(got[:, 1:], np.asarray(x[:, :-1]), rtol=1e-3, atol=1e-3)
    assert np.all(got[:, 0] == 0)  # stage 0 receives nothing
    assert np.linalg.matrix_rank(got[0, 1], tol=1e-3) <= rank
    if rank > 1:  # one column fewer loses a direction
        low = np.asarray(LINK(xs, jnp.full((S,), rank - 1)))
        assert np.max(np.abs(low[:, 1:] - np.asarray(x[:, :-1]))) > 1e-3


def test_link_controller_lowers_the_rank_of_a_boundary_whose_entropy_falls():
    ctrl = gc.link_controller(8, 8, stages=2, init_rank=4, max_rank=8, window=2)
    state = ctrl.init()
    for step in range(8):
        bits = jnp.asarray([6.0, 6.0]) if step < 2 else jnp.asarray([6.0, 4.0])
        state = ctrl.update(state, bits, True)
    ranks = np.asarray(state.ranks)
    assert ranks[0] == 4 and ranks[1] < 4


def test_bad_pipeline_inputs_raise_naming_the_argument():
    params, x, y = make_problem(0)
    placed = place(params, x, y)
    with pytest.raises(ValueError, match="ranks"):
        COMPRESSED(*placed, jnp.full((S + 1,), 2, jnp.int32))
    with pytest.raises(ValueError, match="max_rank"):
        pipelined_step(max_rank=D + 1)(*placed, jnp.full((S,), 2, jnp.int32))

    def bad(p, x):
        stage = jax.tree.map(lambda a: a[0], p["stages"])
        return gc.gpipe(lambda q, h: h[..., :2], stage, x, axis_name="pp")[0]

    f = jax.shard_map(bad, mesh=MESH, in_specs=(SPECS, P()), out_specs=P(), check_vma=False)
    with pytest.raises(ValueError, match="stage_fn"):
        jax.jit(f)(placed[0], jnp.zeros((MICRO, MB, T, D)))
    send = lambda x: gc.stage_send(x, axis_name="pp", ranks=jnp.full((S,), 2))  # no max_rank
    f = jax.shard_map(send, mesh=MESH, in_specs=P(), out_specs=P(), check_vma=False)
    with pytest.raises(ValueError, match="max_rank"):
        jax.jit(f)(jnp.zeros((MB, D)))
    with pytest.raises(ValueError, match="buckets"):
        pipelined_step(max_rank=D, buckets=0)(*placed, jnp.full((S,), 2, jnp.int32))
    with pytest.raises(ValueError, match="stages"):
        gc.link_controller(8, 8, stages=1, init_rank=2, max_rank=4)
