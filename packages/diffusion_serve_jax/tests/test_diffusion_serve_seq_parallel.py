"""Sequence-parallel DiT (one image's tokens over 8 simulated devices, K/V all-gathered):
equal to the unsharded model, under jit and grad (the runtime test serves it end to end)."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from diffusion_serve_jax import DiT, SequenceParallelDiT
from testkit import assert_trees_close


def _dit(depth=1):
    """A DiT with every weight perturbed (the zero-initialised output and adaLN layers would
    hide errors), built in one jitted program (eager initialisers compile op by op)."""

    def make():
        dit = DiT(width=16, depth=depth, heads=2, cond_dim=16, rngs=nnx.Rngs(0))
        leaves, tree = jax.tree.flatten(nnx.state(dit))
        keys = jax.random.split(jax.random.key(1), len(leaves))
        noisy = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
        return jax.tree.unflatten(tree, noisy)

    graphdef = nnx.graphdef(
        nnx.eval_shape(lambda: DiT(width=16, depth=depth, heads=2, cond_dim=16, rngs=nnx.Rngs(0)))
    )
    return nnx.merge(graphdef, jax.jit(make)())


def test_sequence_parallel_dit_equals_unsharded_under_jit_and_grad():
    dit = _dit()
    mesh = jax.make_mesh((8,), ("seq",))
    sp = SequenceParallelDiT(dit, mesh)
    k = jax.random.split(jax.random.key(2), 3)
    x = jax.random.normal(k[0], (2, 8, 8))
    t = jnp.array([3, 7])
    c = jax.random.normal(k[1], (2, 16))
    ctrl = jax.random.normal(k[2], (2, 16, 16))

    @jax.jit
    def output_and_grad(x):  # the control-free path is served in the runtime test
        def loss(x, model):
            out = model(x, t, c, ctrl)
            return jnp.sum(out**2), out

        def run(model):
            return jax.value_and_grad(loss, has_aux=True)(x, model)

        return run(sp), run(dit)

    got, want = output_and_grad(x)
    (_, out), grad = want
    assert float(jnp.abs(out).max()) > 0.1 and float(jnp.abs(grad).max()) > 0.1  # non-trivial
    assert_trees_close(got, want, rtol=1e-4, atol=1e-5)


def test_sequence_parallel_dit_checks_its_mesh():
    dit = nnx.eval_shape(lambda: DiT(width=16, depth=1, heads=2, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="mesh: its 3 devices must divide the DiT's 16 tokens"):
        SequenceParallelDiT(dit, jax.make_mesh((3,), ("seq",), devices=jax.devices()[:3]))
    with pytest.raises(ValueError, match="mesh: expected a 1-D mesh"):
        SequenceParallelDiT(dit, jax.make_mesh((2, 4), ("a", "b")))
