"""Training the two BERT models on edits that improved fitness, and saving them with orbax.

The training boundary is functional: ``graphdef, state = nnx.split(model)``, a jitted pure
step ``(state, opt_state, batch) -> (state, opt_state, loss)``, then ``nnx.merge``.
"""

import functools
import pathlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from ._bert import CrossoverModel, MutationModel, masked_point_logits, node_logits
from ._buffer import EditBuffer, edit_weights
from ._keys import loop_key
from ._primitives import PrimitiveSet
from ._types import HostOrDevice


def _mean(x, batch, name):
    """Mean of per-row losses, weighted by ``batch[name]`` where the batch carries weights."""
    if name not in batch:
        return jnp.mean(x)
    w = batch[name]
    return jnp.sum(w * x) / jnp.maximum(jnp.sum(w), 1e-12)


def mutation_loss(model: MutationModel, batch: Mapping[str, HostOrDevice], pset: PrimitiveSet):
    """Cross-entropy of the recorded gene among the tokens of its arity class (weighted by
    ``batch["mut_weight"]`` where present, e.g. `edit_weights` of the gains)."""
    cls = jnp.asarray(pset.token_classes())
    allowed = cls[None, :] == cls[batch["mut_target"]][:, None]
    logits = masked_point_logits(model(batch["mut_tokens"]), batch["mut_point"], allowed)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, batch["mut_target"][:, None], axis=1)[:, 0]
    return _mean(nll, batch, "mut_weight")


def crossover_loss(model: CrossoverModel, batch: Mapping[str, HostOrDevice], pset: PrimitiveSet):
    """Cross-entropy of the recorded crossover point (parent) and donor point (donor), weighted
    by ``batch["xo_weight"]`` where present."""
    sa, sb = model(batch["xo_parent"], batch["xo_donor"])
    la = jax.nn.log_softmax(node_logits(sa, batch["xo_parent"], pset.pad), axis=-1)
    lb = jax.nn.log_softmax(node_logits(sb, batch["xo_donor"], pset.pad), axis=-1)
    pa = jnp.take_along_axis(la, batch["xo_point"][:, None], axis=1)[:, 0]
    pb = jnp.take_along_axis(lb, batch["xo_donor_point"][:, None], axis=1)[:, 0]
    return _mean(-(pa + pb), batch, "xo_weight")


def mutation_edit_scores(
    model: MutationModel, batch: Mapping[str, HostOrDevice], pset: PrimitiveSet, *, kind: str
):
    """Score of each recorded point mutation (masked parent, point, new gene).

    ``kind="policy"`` (a model trained with `mutation_loss` on improving edits): the
    log-likelihood ratio of the new gene against a uniform choice within its arity class.
    ``kind="value"`` (trained with `mutation_value_loss`): the predicted log-odds that the
    edit improves fitness."""
    cls = jnp.asarray(pset.token_classes())
    allowed = cls[None, :] == cls[batch["mut_target"]][:, None]
    logits = masked_point_logits(model(batch["mut_tokens"]), batch["mut_point"], allowed)
    if kind == "value":
        return jnp.take_along_axis(logits, batch["mut_target"][:, None], axis=1)[:, 0]
    if kind != "policy":
        raise ValueError(f"kind: expected 'policy' or 'value', got {kind!r}")
    logp = jax.nn.log_softmax(logits, axis=-1)
    at = jnp.take_along_axis(logp, batch["mut_target"][:, None], axis=1)[:, 0]
    return at + jnp.log(jnp.sum(allowed, axis=1).astype(at.dtype))


def crossover_edit_scores(
    model: CrossoverModel, batch: Mapping[str, HostOrDevice], pset: PrimitiveSet, *, kind: str
):
    """Score of each recorded crossover (parent, donor and both points): ``"policy"``, the
    log-likelihood ratio of the two points against uniform ones; ``"value"``, the predicted
    log-odds of improving (the sum of the two position scores)."""
    sa, sb = model(batch["xo_parent"], batch["xo_donor"])
    pa, pb = batch["xo_point"][:, None], batch["xo_donor_point"][:, None]
    if kind == "value":
        return jnp.take_along_axis(sa, pa, axis=1)[:, 0] + jnp.take_along_axis(sb, pb, axis=1)[:, 0]
    if kind != "policy":
        raise ValueError(f"kind: expected 'policy' or 'value', got {kind!r}")
    out = 0.0
    for s, t, p in ((sa, batch["xo_parent"], pa), (sb, batch["xo_donor"], pb)):
        logp = jax.nn.log_softmax(node_logits(s, t, pset.pad), axis=-1)
        n = jnp.sum(t != pset.pad, axis=1).astype(logp.dtype)
        out = out + jnp.take_along_axis(logp, p, axis=1)[:, 0] + jnp.log(n)
    return out


def _bce(logit, gain, batch, name):
    label = (gain > 0).astype(logit.dtype)
    return _mean(optax.sigmoid_binary_cross_entropy(logit, label), batch, name)


def mutation_value_loss(
    model: MutationModel, batch: Mapping[str, HostOrDevice], pset: PrimitiveSet
):
    """Binary cross-entropy of "this point mutation improved fitness" (``mut_gain > 0``) on
    ALL recorded edits (`GPConfig(record="all")`, `mutation_data(..., gain=True)`): the
    logit at the masked point for the new gene is the predicted log-odds."""
    score = mutation_edit_scores(model, batch, pset, kind="value")
    return _bce(score, batch["mut_gain"], batch, "mut_weight")


def crossover_value_loss(
    model: CrossoverModel, batch: Mapping[str, HostOrDevice], pset: PrimitiveSet
):
    """Binary cross-entropy of "this crossover improved fitness" (``xo_gain > 0``)."""
    score = crossover_edit_scores(model, batch, pset, kind="value")
    return _bce(score, batch["xo_gain"], batch, "xo_weight")


class TrainResult(NamedTuple):
    model: nnx.Module
    losses: np.ndarray


@functools.partial(
    jax.jit, static_argnames=("graphdef", "loss_fn", "pset", "steps", "batch_size", "learning_rate")
)
def _train_run(
    params, data, n_valid, key, *, graphdef, loss_fn, pset, steps, batch_size, learning_rate
):
    opt = optax.adam(learning_rate)

    def body(carry, k):
        p, s = carry
        idx = jax.random.randint(k, (batch_size,), 0, n_valid)
        batch = {name: v[idx] for name, v in data.items()}
        loss, g = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p), batch, pset))(p)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), loss

    (p, _), losses = jax.lax.scan(
        body, (params, opt.init(params)), jax.random.split(loop_key(key), steps)
    )
    return p, losses


def train_model(
    model: nnx.Module,
    loss_fn,
    data: Mapping[str, HostOrDevice],
    pset: PrimitiveSet,
    *,
    key: jax.Array,
    steps: int = 200,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    n_valid: int | None = None,
) -> TrainResult:
    """Fit `model` with Adam on minibatches drawn from the first `n_valid` rows of `data`
    (arrays with a common first axis; default all rows). Keeping the arrays at a fixed size
    (e.g. a whole `EditBuffer`) and varying `n_valid` reuses one compilation. Returns the
    trained model (a new object) and the loss per step."""
    sizes = {v.shape[0] for v in data.values()}
    if len(sizes) != 1:
        raise ValueError(f"data: arrays must share their first axis, got sizes {sorted(sizes)}")
    size = sizes.pop()
    n_valid = size if n_valid is None else int(n_valid)
    if not 0 < n_valid <= size:
        raise ValueError(f"n_valid: expected 1..{size} training rows, got {n_valid}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps/batch_size: expected >= 1, got {steps}/{batch_size}")
    graphdef, params = nnx.split(model)
    params, losses = _train_run(
        params,
        {k: jnp.asarray(v) for k, v in data.items()},
        jnp.int32(n_valid),
        key,
        graphdef=graphdef,
        loss_fn=loss_fn,
        pset=pset,
        steps=int(steps),
        batch_size=int(batch_size),
        learning_rate=float(learning_rate),
    )
    return TrainResult(nnx.merge(graphdef, params), np.asarray(losses))


def _fields(data, names, gain, weight, sharpness, with_gain=False):
    if isinstance(data, tuple):
        data = data._asdict()
    out = {k: data[k] for k in names + ((gain,) if with_gain else ())}
    if sharpness is not None:
        out[weight] = edit_weights(data[gain], sharpness)
    return out


def mutation_data(
    data: EditBuffer | Mapping[str, Any], sharpness: float | None = None, *, gain: bool = False
) -> dict[str, Any]:
    """The mutation model's fields of an `EditBuffer` (or of `merge_buffers` output: valid rows
    only); with `sharpness`, plus ``mut_weight = edit_weights(mut_gain, sharpness)``; with
    `gain`, plus ``mut_gain`` (the label of `mutation_value_loss`)."""
    names = ("mut_tokens", "mut_point", "mut_target")
    return _fields(data, names, "mut_gain", "mut_weight", sharpness, gain)


def crossover_data(
    data: EditBuffer | Mapping[str, Any], sharpness: float | None = None, *, gain: bool = False
) -> dict[str, Any]:
    """The crossover model's fields of an `EditBuffer` (or of `merge_buffers` output: valid
    rows only); with `sharpness`, plus ``xo_weight = edit_weights(xo_gain, sharpness)``; with
    `gain`, plus ``xo_gain`` (the label of `crossover_value_loss`)."""
    names = ("xo_parent", "xo_donor", "xo_point", "xo_donor_point")
    return _fields(data, names, "xo_gain", "xo_weight", sharpness, gain)


def save_model(path: str | pathlib.Path, model: nnx.Module) -> None:
    """Write the model's `nnx.state` with orbax (``path`` must not exist yet)."""
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(pathlib.Path(path).absolute(), nnx.state(model))


def load_model(path: str | pathlib.Path, template: nnx.Module) -> nnx.Module:
    """Restore a state saved by `save_model` into a model shaped like `template`, on the
    template's devices (so weights saved on a CPU load on a GPU host)."""
    graphdef, state = nnx.split(template)
    # Shardings from the template, not from the file: orbax refuses a saved topology that
    # differs from this host's (CPU-saved guides on a GPU machine).
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state
    )
    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(pathlib.Path(path).absolute(), abstract)
    return nnx.merge(graphdef, state)
