"""Training and evaluation as pure functions over `(graphdef, params)`, optionally sharded
data-parallel over a 1-D device mesh (batch split on "data", parameters replicated).

`make_trainer(model, optimizer)` returns a `Trainer(init, update, predict)`: `init(model)` builds
the `TrainState` pytree (parameters, optimizer state, step); `update(state, x, y)` is one jitted
SGD step returning `(state, metrics)`; `predict(params, x)` gives logits. Only `nnx.Param`
variables exist in these models (LayerNorm, no batch statistics), so the state is just params.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ._types import Labels, Logits

PYSKL_STREAM_WEIGHTS = {"joint": 2.0, "bone": 2.0, "joint_motion": 1.0, "bone_motion": 1.0}


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array


class Trainer(NamedTuple):
    init: Callable[[nnx.Module], TrainState]
    update: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    predict: Callable[..., Logits]


def cross_entropy(logits: Logits, labels: Labels, *, label_smoothing: float = 0.0) -> jax.Array:
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    if label_smoothing:
        onehot = onehot * (1.0 - label_smoothing) + label_smoothing / logits.shape[-1]
    return jnp.mean(optax.softmax_cross_entropy(logits, onehot))


def topk_accuracy(logits: Logits, labels: Labels, k: int = 1) -> jax.Array:
    """Fraction of rows whose label is among the `k` largest logits."""
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"k: expected 1..{logits.shape[-1]}, got {k}")
    true = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    rank = jnp.sum(logits > true, axis=-1)
    return jnp.mean((rank < k).astype(jnp.float32))


def fuse_stream_logits(logits: dict[str, jax.Array], weights: dict[str, float] | None = None):
    """Weighted sum of per-stream softmax scores (PYSKL's 2:2:1:1 for the four streams)."""
    if not logits:
        raise ValueError("logits: expected at least one stream")
    weights = PYSKL_STREAM_WEIGHTS if weights is None else weights
    missing = set(logits) - set(weights)
    if missing:
        raise ValueError(f"weights: no weight for streams {sorted(missing)}")
    return sum(weights[k] * jax.nn.softmax(v, axis=-1) for k, v in logits.items())


def fused_stream_accuracy(
    logits: dict[str, jax.Array],
    labels: Labels,
    weights: dict[str, float] | None = None,
    ks: tuple[int, ...] = (1, 5),
) -> dict[str, float]:
    """Top-k accuracies of the score-averaged ensemble of separately trained stream models
    (`logits[stream]` of shape `(N, classes)`, all for the same samples in the same order)."""
    shapes = {k: tuple(v.shape) for k, v in logits.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"logits: expected one (N, classes) shape for every stream, got {shapes}")
    fused = fuse_stream_logits(logits, weights)
    if fused.shape[0] != len(labels):
        raise ValueError(f"labels: expected {fused.shape[0]} labels, got {len(labels)}")
    labels = jnp.asarray(labels)
    return {f"top{k}": float(topk_accuracy(fused, labels, min(k, fused.shape[-1]))) for k in ks}


def data_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named "data" over the first `num_devices` devices (all by default)."""
    n = len(jax.devices()) if num_devices is None else num_devices
    return jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def make_trainer(
    model: nnx.Module,
    optimizer: optax.GradientTransformation,
    *,
    mesh: jax.sharding.Mesh | None = None,
    label_smoothing: float = 0.0,
) -> Trainer:
    """Pure, jitted training/prediction functions for `model`'s structure (see module doc).

    With `mesh`, the batch (`x`, `y` and optional precomputed heatmaps) is sharded over the
    "data" axis and the state replicated; gradients are averaged over the whole batch by XLA, so
    the step equals the single-device step up to float reassociation.
    """
    graphdef = nnx.graphdef(model)

    def apply(params, x, heatmaps=None):
        return nnx.merge(graphdef, params)(x, heatmaps)

    def init(m: nnx.Module) -> TrainState:
        params = nnx.state(m, nnx.Param)
        return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def update(state: TrainState, x, y, heatmaps=None):
        def loss_fn(params):
            logits = apply(params, x, heatmaps)
            return cross_entropy(logits, y, label_smoothing=label_smoothing), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "accuracy": topk_accuracy(logits, y)}
        return TrainState(params, opt_state, state.step + 1), metrics

    if mesh is None:
        return Trainer(init, jax.jit(update), jax.jit(apply))
    rep = jax.sharding.NamedSharding(mesh, jax.P())
    batch = jax.sharding.NamedSharding(mesh, jax.P("data"))
    upd = jax.jit(update, in_shardings=(rep, batch, batch, batch), out_shardings=(rep, rep))
    upd_nohm = jax.jit(
        lambda s, x, y: update(s, x, y), in_shardings=(rep, batch, batch), out_shardings=(rep, rep)
    )
    pred = jax.jit(apply, in_shardings=(rep, batch, batch), out_shardings=batch)
    pred_nohm = jax.jit(lambda p, x: apply(p, x), in_shardings=(rep, batch), out_shardings=batch)

    def sharded_update(state, x, y, heatmaps=None):
        if heatmaps is None:
            return upd_nohm(state, x, y)
        return upd(state, x, y, heatmaps)

    def sharded_predict(params, x, heatmaps=None):
        return pred_nohm(params, x) if heatmaps is None else pred(params, x, heatmaps)

    return Trainer(init, sharded_update, sharded_predict)


def predict_logits(
    trainer: Trainer,
    params,
    x: np.ndarray,
    *,
    batch_size: int = 64,
    heatmaps: np.ndarray | None = None,
) -> np.ndarray:
    """Logits `(N, classes)` of a whole array dataset, in fixed-size batches (the last partial
    batch is zero-padded, then dropped), so one compiled `predict` serves any N."""
    if len(x) == 0:
        raise ValueError("x: expected a non-empty dataset, got 0 samples")
    if heatmaps is not None and len(heatmaps) != len(x):
        raise ValueError(f"heatmaps: expected {len(x)} rows like x, got {len(heatmaps)}")
    outs = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        hb = None if heatmaps is None else heatmaps[i : i + batch_size]
        pad = batch_size - len(xb)
        if pad:
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            if hb is not None:
                hb = np.concatenate([hb, np.zeros((pad, *hb.shape[1:]), hb.dtype)])
        outs.append(np.asarray(trainer.predict(params, xb, hb))[: batch_size - pad])
    return np.concatenate(outs)


def evaluate(
    trainer: Trainer,
    params,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int = 64,
    heatmaps: np.ndarray | None = None,
    ks: tuple[int, ...] = (1, 5),
) -> dict[str, float]:
    """Top-k accuracies over a whole array dataset (see `predict_logits`)."""
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x, y: expected equal non-zero lengths, got {len(x)}, {len(y)}")
    logits = predict_logits(trainer, params, x, batch_size=batch_size, heatmaps=heatmaps)
    logits = jnp.asarray(logits)
    labels = jnp.asarray(y)
    return {f"top{k}": float(topk_accuracy(logits, labels, min(k, logits.shape[-1]))) for k in ks}
