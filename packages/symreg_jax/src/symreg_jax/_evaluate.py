"""Evaluating a whole population on all data points in one compiled call.

The fast path walks the fixed-length prefix arrays right to left, one position at a time for
the whole population at once (``pop x points`` per step, no per-individual stack). In prefix
order the first argument of the node at ``i`` is always at ``i + 1`` (a static slice); only the
second argument's position ``subtree_end[i + 1]`` is data dependent (one gather). Values live in
a ``(pop, length + 1, points)`` buffer written at static positions, so there is no scatter.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._primitives import OPERATORS, PrimitiveSet
from ._tree import subtree_end
from ._types import Consts, HostOrDevice, Inputs, Predictions, Tokens


def _node_values(tok, a, b, const, xt, pset: PrimitiveSet):
    """Value of a node with token `tok` given argument values `a`, `b` (``(pop, points)``)."""
    out = jnp.broadcast_to(const[:, None], a.shape)
    for v in range(pset.n_vars):
        out = jnp.where((tok == pset.var_offset + v)[:, None], xt[v][None, :], out)
    names = pset.operators
    # sin and cos share one sine evaluation: cos(a) = sin(a + pi/2).
    trig = [n for n in ("sin", "cos") if n in names]
    if len(trig) == 2:
        is_cos = (tok == pset.op_offset + names.index("cos"))[:, None]
        s = jnp.sin(a + jnp.where(is_cos, jnp.float32(np.pi / 2), 0.0).astype(a.dtype))
        is_trig = is_cos | (tok == pset.op_offset + names.index("sin"))[:, None]
        out = jnp.where(is_trig, s, out)
    for i, name in enumerate(names):
        if name in trig and len(trig) == 2:
            continue
        op = OPERATORS[name]
        args = (a,) if op.arity == 1 else (a, b)
        out = jnp.where((tok == pset.op_offset + i)[:, None], op.fn(jnp, *args), out)
    return out


def evaluate_population(
    tokens: Tokens, consts: Consts, inputs: Inputs, pset: PrimitiveSet, *, unroll: int = 1
) -> Predictions:
    """Values of every expression on every point: ``(pop, points)``. Jittable and
    differentiable in `consts`; padding positions evaluate to values that are never read.

    `unroll` is passed to the `lax.scan` over positions (larger compiles slower, may run
    faster)."""
    pop, length = tokens.shape
    points = inputs.shape[0]
    dtype = inputs.dtype
    consts = consts.astype(dtype)
    ends = jax.vmap(lambda t: subtree_end(t, pset))(tokens)
    # Second argument of node i sits at subtree_end[i + 1]; slot `length` holds zeros.
    second = jnp.concatenate([ends[:, 1:], jnp.full((pop, 1), length, jnp.int32)], axis=1)
    second = jnp.minimum(second, length)
    xt = inputs.T

    def body(buf, xs):
        i, tok, const, sec = xs
        a = jax.lax.dynamic_index_in_dim(buf, i + 1, axis=1, keepdims=False)
        b = jnp.take_along_axis(buf, sec[:, None, None], axis=1)[:, 0]
        val = _node_values(tok, a, b, const, xt, pset)
        return jax.lax.dynamic_update_index_in_dim(buf, val, i, axis=1), None

    buf = jnp.zeros((pop, length + 1, points), dtype)
    xs = (jnp.arange(length), tokens.T, consts.T, second.T)
    buf, _ = jax.lax.scan(body, buf, xs, reverse=True, unroll=unroll)
    return buf[:, 0]


def evaluate_reference(
    tokens: HostOrDevice, consts: HostOrDevice, inputs: Inputs, pset: PrimitiveSet
) -> np.ndarray:
    """Plain numpy recursion over one expression (the oracle for tests): ``(points,)``."""
    tokens = [int(t) for t in np.asarray(tokens)]
    consts = np.asarray(consts)
    inputs = np.asarray(inputs)
    ar = pset.arities()

    def rec(i: int) -> tuple[np.ndarray, int]:
        t = tokens[i]
        if pset.var_offset <= t < pset.const_token:
            return inputs[:, t - pset.var_offset], i + 1
        if t == pset.const_token:
            return np.full(inputs.shape[0], consts[i], inputs.dtype), i + 1
        op = OPERATORS[pset.operators[t - pset.op_offset]]
        args, j = [], i + 1
        for _ in range(ar[t]):
            v, j = rec(j)
            args.append(v)
        with np.errstate(all="ignore"):
            return np.asarray(op.fn(np, *args), inputs.dtype), j

    return rec(0)[0]


def to_jax_function(tokens: np.ndarray, consts: np.ndarray, pset: PrimitiveSet):
    """A jittable ``f(inputs: (points, vars)) -> (points,)`` for one expression, built by
    unrolling its tree into jnp calls (same protected semantics as the evaluator)."""
    tokens = [int(t) for t in np.asarray(tokens)]
    consts = [float(c) for c in np.asarray(consts)]
    ar = pset.arities()

    def build(i: int):
        t = tokens[i]
        if pset.var_offset <= t < pset.const_token:
            v = t - pset.var_offset
            return (lambda x: x[:, v]), i + 1
        if t == pset.const_token:
            c = consts[i]
            return (lambda x: jnp.full((x.shape[0],), c, x.dtype)), i + 1
        op = OPERATORS[pset.operators[t - pset.op_offset]]
        fns, j = [], i + 1
        for _ in range(ar[t]):
            f, j = build(j)
            fns.append(f)
        return (lambda x: op.fn(jnp, *(f(x) for f in fns))), j

    f = build(0)[0]

    @functools.wraps(f)
    def fn(inputs: Float[Array, "points vars"]) -> Float[Array, " points"]:
        return f(inputs)

    return fn


def normalized_mse(
    predictions: Predictions, targets: Float[Array, " points"]
) -> Float[Array, " pop"]:
    """Mean squared error over the target variance (``1 - R^2``); non-finite -> ``inf``."""
    var = jnp.maximum(jnp.var(targets), 1e-12)
    mse = jnp.mean((predictions - targets[None, :]) ** 2, axis=-1) / var
    return jnp.where(jnp.isfinite(mse), mse, jnp.inf)
