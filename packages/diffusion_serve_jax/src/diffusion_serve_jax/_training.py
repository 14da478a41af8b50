"""Training as a NamedTuple of pure functions (init, update) over a model's parameters."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ._diffusion import DiffusionModels, Schedule, diffusion_loss
from ._models import DigitClassifier, Upscaler


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array


class Trainer(NamedTuple):
    """`init(params) -> state`; `update(state, data, *, key) -> (state, loss)` (jitted)."""

    init: Callable[..., TrainState]
    update: Callable[..., tuple[TrainState, jax.Array]]


def make_trainer(
    graphdef: Any,
    loss_fn: Callable[[nnx.Module, dict[str, jax.Array], jax.Array], jax.Array],
    optimizer: optax.GradientTransformation,
) -> Trainer:
    """A trainer for `loss_fn(model, data, key)`; the loss draws its own minibatch from `data`."""

    def init(params: Any) -> TrainState:
        return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    @jax.jit
    def update(state: TrainState, data: dict[str, jax.Array], *, key: jax.Array):
        def f(p):
            return loss_fn(nnx.merge(graphdef, p), data, key)

        loss, grads = jax.value_and_grad(f)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1), loss

    return Trainer(init, update)


def _minibatch(data: dict[str, jax.Array], key: jax.Array, batch_size: int):
    n = jax.tree.leaves(data)[0].shape[0]
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return jax.tree.map(lambda a: a[idx], data)


def diffusion_trainer(
    graphdef: Any, schedule: Schedule, *, batch_size: int = 128, lr: float = 2e-3
) -> Trainer:
    """Trainer of `DiffusionModels`; data = {"images", "labels", "edges"}."""

    def loss_fn(models: DiffusionModels, data, key):
        kb, kl = jax.random.split(key)
        b = _minibatch(data, kb, batch_size)
        return diffusion_loss(models, schedule, b["images"], b["labels"], b["edges"], key=kl)

    opt = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, 50, 4000, lr * 0.1))
    return make_trainer(graphdef, loss_fn, optax.chain(optax.clip_by_global_norm(1.0), opt))


def classifier_trainer(graphdef: Any, *, batch_size: int = 128, lr: float = 3e-3) -> Trainer:
    """Trainer of `DigitClassifier`; data = {"images", "labels"} (light noise augmentation)."""

    def loss_fn(model: DigitClassifier, data, key):
        kb, kn = jax.random.split(key)
        b = _minibatch(data, kb, batch_size)
        x = b["images"] + 0.1 * jax.random.normal(kn, b["images"].shape)
        return optax.softmax_cross_entropy_with_integer_labels(model(x), b["labels"]).mean()

    return make_trainer(graphdef, loss_fn, optax.adam(lr))


def upscaler_trainer(graphdef: Any, *, batch_size: int = 64, lr: float = 3e-3) -> Trainer:
    """Trainer of `Upscaler`; data = {"low", "high"} (2x-downsampled digits -> originals)."""

    def loss_fn(model: Upscaler, data, key):
        b = _minibatch(data, key, batch_size)
        return jnp.mean((model(b["low"]) - b["high"]) ** 2)

    return make_trainer(graphdef, loss_fn, optax.adam(lr))


def fit(
    trainer: Trainer, state: TrainState, data: dict[str, jax.Array], steps: int, *, key: jax.Array
) -> tuple[TrainState, list[float]]:
    """Run `steps` updates (keys folded from `key` and the step); returns state and losses."""
    losses = []
    for _ in range(steps):
        state, loss = trainer.update(state, data, key=jax.random.fold_in(key, state.step))
        losses.append(loss)
    return state, [float(x) for x in jax.device_get(losses)]
