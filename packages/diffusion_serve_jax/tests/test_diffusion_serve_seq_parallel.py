"""Sequence-parallel DiT (one image's tokens over 8 simulated devices, K/V all-gathered):
equal to the unsharded model under jit (the runtime test serves it end to end)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffusion_serve_jax import DiT, SequenceParallelDiT
from testkit import assert_trees_close


def _dit():
    """A DiT with random host weights everywhere (the zero-initialised output and adaLN
    layers would hide errors; numpy draws compile nothing, unlike JAX's initialisers)."""
    abstract = nnx.eval_shape(
        lambda: DiT(width=16, depth=1, heads=2, cond_dim=16, rngs=nnx.Rngs(0))
    )
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(0)
    leaves, tree = jax.tree.flatten(state)
    leaves = [jnp.asarray(0.3 * rng.standard_normal(a.shape), a.dtype) for a in leaves]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


def test_sequence_parallel_dit_equals_unsharded_under_jit():
    dit = _dit()
    sp = SequenceParallelDiT(dit, jax.make_mesh((8,), ("seq",)))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 8)).astype(np.float32)
    t = np.array([3, 7], np.int32)
    c = rng.standard_normal((2, 16)).astype(np.float32)
    ctrl = rng.standard_normal((2, 16, 16)).astype(np.float32)
    # one program for both (the control-free path is served in the runtime test)
    got, want = jax.jit(lambda x: (sp(x, t, c, ctrl), dit(x, t, c, ctrl)))(x)
    assert float(jnp.abs(want).max()) > 0.1  # a non-trivial output
    assert_trees_close(got, want, rtol=1e-5, atol=1e-5)


def test_sequence_parallel_dit_checks_its_mesh():
    dit = nnx.eval_shape(lambda: DiT(width=16, depth=1, heads=2, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="mesh: its 3 devices must divide the DiT's 16 tokens"):
        SequenceParallelDiT(dit, jax.make_mesh((3,), ("seq",), devices=jax.devices()[:3]))
    with pytest.raises(ValueError, match="mesh: expected a 1-D mesh"):
        SequenceParallelDiT(dit, jax.make_mesh((2, 4), ("a", "b")))
