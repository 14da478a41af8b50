"""Expressions: validity by construction, fast evaluator vs numpy recursion, exports, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy
from hypothesis import given
from hypothesis import strategies as st

import symreg_jax as sr
from symreg_jax._tree import node_at, replace_gene, same_class_mask
from testkit import assert_trees_close

PSET = sr.PrimitiveSet(
    operators=("add", "sub", "mul", "div", "sin", "cos", "exp", "log", "sqrt", "neg"),
    n_vars=2,
    max_len=16,
)
POP = 16


def _key(seed):
    return jax.random.key(seed)


@jax.jit
def _population(key):
    depths = 1 + jnp.arange(POP) % 4
    return sr.random_trees(key, PSET, POP, max_depth=depths, full=jnp.arange(POP) % 2 == 0)


_evaluate = jax.jit(sr.evaluate_population, static_argnums=3)
_ends = jax.jit(jax.vmap(lambda t: sr.subtree_end(t, PSET)))


def _inputs(seed, n=24):
    return np.random.default_rng(seed).uniform(-3, 3, (n, PSET.n_vars)).astype(np.float32)


def _ends_reference(tokens):
    ar = PSET.arities()
    out = []
    for i in range(len(tokens)):
        if tokens[i] == PSET.pad:
            out.append(i + 1)
            continue
        need, j = 1, i
        while need:
            need += ar[tokens[j]] - 1
            j += 1
        out.append(j)
    return out


@given(st.integers(0, 2**30))
def test_random_trees_are_valid_and_spans_match_reference(seed):
    tokens, consts = _population(_key(seed))
    tokens = np.asarray(tokens)
    assert all(sr.is_valid_reference(t, PSET) for t in tokens)
    assert np.all(np.asarray(consts)[tokens != PSET.const_token] == 0)
    np.testing.assert_array_equal(np.asarray(_ends(tokens)), [_ends_reference(t) for t in tokens])


@given(st.integers(0, 2**30))
def test_fast_evaluator_matches_numpy_recursion(seed):
    tokens, consts = _population(_key(seed))
    x = _inputs(seed)
    fast = np.asarray(_evaluate(tokens, consts, x, PSET))
    ref = np.stack(
        [sr.evaluate_reference(t, c, x, PSET) for t, c in zip(tokens, consts, strict=False)]
    )
    # Random trees include ill-conditioned ones (sine of huge arguments, nested exp) where
    # float32 rounding order alone moves the result; allow at most 1 % such values.
    close = np.isclose(fast, ref, rtol=2e-4, atol=2e-4, equal_nan=True)
    assert close.mean() >= 0.99, f"{(~close).sum()} of {close.size} values differ"


@jax.jit
def _edits(key):
    k1, k2, k3 = jax.random.split(key, 3)
    (a, ac), (b, bc) = _population(k1), _population(k2)
    u = jax.random.uniform(k3, (3, POP))
    pa = jax.vmap(node_at, in_axes=(0, 0, None))(u[0], a, PSET)
    pb = jax.vmap(node_at, in_axes=(0, 0, None))(u[1], b, PSET)
    child, cc, ok = jax.vmap(sr.splice, in_axes=(0, 0, 0, 0, 0, 0, None))(
        a, ac, pa, b, bc, pb, PSET
    )
    allowed = jax.vmap(same_class_mask, in_axes=(0, 0, None))(a, pa, PSET)
    new = jnp.argmax(
        jnp.where(allowed, u[2][:, None] + jnp.arange(PSET.vocab_size)[None, :], -1), axis=1
    )
    mut, _ = jax.vmap(replace_gene)(a, ac, pa, new, jnp.zeros(POP))
    return a, b, pa, pb, child, ok, mut


@given(st.integers(0, 2**30))
def test_crossover_and_gene_edits_keep_expressions_valid(seed):
    a, b, pa, pb, child, ok, mut = map(np.asarray, _edits(_key(seed)))
    for i in range(POP):
        assert sr.is_valid_reference(child[i], PSET)
        assert sr.is_valid_reference(mut[i], PSET)
        ea, eb = _ends_reference(a[i]), _ends_reference(b[i])
        expect = list(a[i][: pa[i]]) + list(b[i][pb[i] : eb[pb[i]]]) + list(a[i][ea[pa[i]] :])
        expect = [t for t in expect if t != PSET.pad]
        if ok[i]:
            assert [t for t in child[i] if t != PSET.pad] == expect
        else:
            assert len(expect) > PSET.max_len
            np.testing.assert_array_equal(child[i], a[i])
        assert (mut[i] != a[i]).sum() <= 1


def test_protected_operators_documented_semantics():
    pset = sr.PrimitiveSet(operators=("div", "log", "sqrt", "exp"), n_vars=1, max_len=4)
    div, log, sqrt, exp = 1, 2, 3, 4
    x0, c = pset.var_offset, pset.const_token
    x = np.array([[0.0], [-4.0], [1e3]], np.float32)
    prog = np.array([[div, c, x0, 0], [log, x0, 0, 0], [sqrt, x0, 0, 0], [exp, x0, 0, 0]])
    consts = np.array([[0, 2.0, 0, 0]] + [[0, 0, 0, 0]] * 3, np.float32)
    out = np.asarray(_evaluate(jnp.asarray(prog), jnp.asarray(consts), x, pset))
    np.testing.assert_allclose(out[0], [1.0, -0.5, 2e-3], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0.0, np.log(4.0), np.log(1e3)], rtol=1e-6)
    np.testing.assert_allclose(out[2], [0.0, 2.0, np.sqrt(1e3)], rtol=1e-6)
    np.testing.assert_allclose(out[3], [1.0, np.exp(-4.0), np.exp(30.0)], rtol=1e-5)


def test_exports_agree_with_reference():
    pset = sr.PrimitiveSet(operators=("add", "mul", "sin", "cos"), n_vars=2, max_len=16)
    tokens, consts = sr.random_trees(_key(3), pset, 8, max_depth=3, full=True)
    x = _inputs(1)
    for t, c in zip(np.asarray(tokens), np.asarray(consts), strict=False):
        ref = sr.evaluate_reference(t, c, x, pset)
        f = jax.jit(sr.to_jax_function(t, c, pset))
        np.testing.assert_allclose(np.asarray(f(x)), ref, rtol=1e-5, atol=1e-5)
        expr = sr.to_sympy(t, c, pset, digits=12)
        fn = sympy.lambdify(sympy.symbols("x0 x1", real=True), expr, "numpy")
        np.testing.assert_allclose(
            np.broadcast_to(fn(x[:, 0], x[:, 1]), ref.shape), ref, rtol=1e-4, atol=1e-4
        )
        assert isinstance(sr.to_latex(t, c, pset), str)


def test_symbolic_match_up_to_constants():
    x = sympy.Symbol("x0", real=True)
    assert sr.is_symbolic_match(x**2 + x + 3.0, x * (x + 1))
    assert sr.is_symbolic_match(2.0000001 * sympy.sin(x), sympy.sin(x))
    assert not sr.is_symbolic_match(sympy.sin(x), sympy.cos(x))


def test_gradient_through_constants_matches_finite_difference():
    # c0 * sin(x0 * c1), prefix: mul c sin mul x0 c
    mul, sin = 1 + PSET.operators.index("mul"), 1 + PSET.operators.index("sin")
    c, x0 = PSET.const_token, PSET.var_offset
    toks = (
        jnp.zeros((1, PSET.max_len), jnp.int32).at[0, :6].set(jnp.array([mul, c, sin, mul, x0, c]))
    )
    x = _inputs(0)

    @jax.jit
    def loss(cs):
        return jnp.sum(sr.evaluate_population(toks, cs, x, PSET) ** 2)

    cs = jnp.zeros((1, PSET.max_len)).at[0, 1].set(1.3).at[0, 5].set(0.7)
    g = jax.jit(jax.grad(loss))(cs)
    eps = 1e-3
    for pos in (1, 5):
        fd = (loss(cs.at[0, pos].add(eps)) - loss(cs.at[0, pos].add(-eps))) / (2 * eps)
        np.testing.assert_allclose(g[0, pos], fd, rtol=2e-2)
    assert np.all(np.asarray(g)[0, [0, 2, 3, 4]] == 0)


def test_sharded_evaluation_equals_single_device():
    mesh = sr.population_mesh()
    assert mesh.shape["pop"] == 8
    tokens, consts = _population(_key(5))
    x = _inputs(5)
    sharded = sr.evaluate_population_sharded(tokens, consts, x, PSET, mesh)
    assert len(sharded.sharding.device_set) == 8
    assert_trees_close(np.asarray(sharded), np.asarray(_evaluate(tokens, consts, x, PSET)))
    with pytest.raises(ValueError, match="tokens: population 12"):
        sr.evaluate_population_sharded(tokens[:12], consts[:12], x, PSET, mesh)


def test_bad_primitive_sets_raise():
    with pytest.raises(ValueError, match="operators"):
        sr.PrimitiveSet(operators=("add", "tanh"))
    with pytest.raises(ValueError, match="n_vars"):
        sr.PrimitiveSet(n_vars=0)
    with pytest.raises(ValueError, match="max_len"):
        sr.PrimitiveSet(max_len=2)
    with pytest.raises(ValueError, match="variables"):
        sr.to_sympy(np.array([PSET.var_offset] + [0] * 15), np.zeros(16), PSET, variables=("a",))
