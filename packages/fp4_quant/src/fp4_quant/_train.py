"""Functional training boundary: `nnx.split` -> pure (optionally sharded) jitted step -> merge.

The trainable parameters and the buffers (Hot-Channel Patch state and precision gates) travel
as two separate pytrees: gradients flow only into `params`; the HCP state in `buffers` is
updated in the forward pass (scores, periodic top-k) like optimizer state.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ._e2m1 import key_seed
from ._model import DecoderLM, lm_loss
from ._types import Array, Int, PRNGKey


class TrainState(NamedTuple):
    params: nnx.State
    buffers: nnx.State
    opt_state: optax.OptState
    step: Array


def split_model(model: DecoderLM):
    """(graphdef, params, buffers) of a model (buffers: HCP state and gates, maybe empty)."""
    return nnx.split(model, nnx.Param, ...)


def init_train_state(model: DecoderLM, optimizer: optax.GradientTransformation):
    graphdef, params, buffers = split_model(model)
    return graphdef, TrainState(params, buffers, optimizer.init(params), jnp.zeros((), jnp.int32))


def make_train_step(graphdef, optimizer: optax.GradientTransformation, mesh=None, *, jit=True):
    """A jitted `step(state, tokens, key) -> (state, loss)` (the bare function if `jit=False`,
    e.g. to `jax.vmap` over runs that share one graph).

    With `mesh` (a 1-D mesh with an Auto axis "data"), the batch is sharded over the devices and the
    state replicated: data-parallel training whose result equals the single-device step.
    """

    def step(state: TrainState, tokens: Int[Array, "b t1"], key: PRNGKey):
        def loss_fn(params):
            model = nnx.merge(graphdef, params, state.buffers, copy=True)
            loss = lm_loss(model, tokens, key=key_seed(key, state.step + 1), update_hcp=True)
            return loss, nnx.state(model, nnx.Not(nnx.Param))

        (loss, buffers), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, buffers, opt_state, state.step + 1), loss

    if not jit:
        return step
    if mesh is None:
        return jax.jit(step, donate_argnums=0)
    repl = NamedSharding(mesh, P())
    data = NamedSharding(mesh, P("data"))
    return jax.jit(step, in_shardings=(repl, data, repl), out_shardings=(repl, repl))


def make_eval_loss(graphdef, *, jit=True):
    """A jitted `eval_loss(state, tokens) -> loss` (no HCP update, no stochastic rounding)."""

    def eval_loss(state: TrainState, tokens):
        model = nnx.merge(graphdef, state.params, state.buffers, copy=True)
        return lm_loss(model, tokens, key=jax.random.key(0))

    return jax.jit(eval_loss) if jit else eval_loss


def make_collect_inputs(graphdef):
    """A jitted function returning the input activation of every QLinear, keyed by path."""

    @jax.jit
    def collect(state: TrainState, tokens):
        model = nnx.merge(graphdef, state.params, state.buffers, copy=True)
        forward = nnx.capture(
            lambda m: m(tokens, key=jax.random.key(0), record=True), nnx.Intermediate
        )
        _, inter = forward(model)
        flat = jax.tree_util.tree_flatten_with_path(inter)[0]
        return {jax.tree_util.keystr(p): v for p, v in flat}

    return collect
