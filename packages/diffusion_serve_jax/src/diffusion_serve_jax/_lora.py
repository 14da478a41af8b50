"""LoRA style adapters for the DiT: low-rank updates W + scale * A @ B of every block's `qkv` and
`proj` kernels, trained with the base weights frozen, and served as one node holding a stack of
adapters that each request picks by index (the base weights are shared; `lora_rows_module`
adds each row's low-rank update to the shared base output, SGMV / Punica style, where the
reference merges a full kernel per row: `lora_module` in a vmap over the batch).

Adapters are plain pytrees `{"<block>.<layer>": {"a": (L, in, r), "b": (L, r, out)}}` for a
stack of L adapters (`lora_stack`); one adapter is the same without the leading axis.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ._diffusion import DiffusionModels, Schedule, diffusion_loss
from ._models import DiT
from ._training import Trainer, TrainState, _minibatch

LORA_LAYERS = ("qkv", "proj")


def lora_init(dit: DiT, *, rank: int, key: jax.Array) -> dict:
    """One adapter for `dit`: A ~ N(0, 1/in), B = 0, so a fresh adapter changes nothing."""
    if rank < 1:
        raise ValueError(f"rank: expected >= 1, got {rank}")
    out = {}
    for i, block in enumerate(dit.blocks):
        for name in LORA_LAYERS:
            k_in, k_out = getattr(block, name).kernel.shape
            key, sub = jax.random.split(key)
            out[f"{i}.{name}"] = {
                "a": jax.random.normal(sub, (k_in, rank)) / np.sqrt(k_in),
                "b": jnp.zeros((rank, k_out)),
            }
    return out


def lora_stack(adapters: list[dict]) -> dict:
    """Stack adapters (same rank) along a leading axis for a multi-adapter node."""
    if not adapters:
        raise ValueError("adapters: expected at least one adapter")
    return jax.tree.map(lambda *a: jnp.stack(a), *adapters)


def lora_merge(dit_pure: dict, adapter: dict, *, scale: float = 1.0) -> dict:
    """The DiT's pure-dict state (`nnx.to_pure_dict(state)`) with one adapter merged in."""
    blocks = dict(dit_pure["blocks"])
    for key, ab in adapter.items():
        i, name = key.split(".")
        block = dict(blocks[int(i)])
        layer = dict(block[name])
        if ab["a"].shape[0] != layer["kernel"].shape[0]:
            raise ValueError(
                f"adapter: {key} expects kernels with {ab['a'].shape[0]} inputs, "
                f"the model has {layer['kernel'].shape}"
            )
        layer["kernel"] = layer["kernel"] + scale * ab["a"] @ ab["b"]
        block[name] = layer
        blocks[int(i)] = block
    return {**dit_pure, "blocks": blocks}


def lora_module(dit_graphdef, dit_state: nnx.State, adapter: dict, *, scale: float = 1.0) -> DiT:
    """A DiT module with `adapter` merged into a copy of `dit_state` (works under jit)."""
    state = jax.tree.map(lambda x: x, dit_state)
    nnx.replace_by_pure_dict(state, lora_merge(nnx.to_pure_dict(dit_state), adapter, scale=scale))
    return nnx.merge(dit_graphdef, state)


class _RowLoRA:
    """`base(x) + scale * (x @ A_r) @ B_r` for every row r of a batch, each row with its own
    adapter (`a`: (rows, in, rank), `b`: (rows, rank, out)); a batch of k x rows (the
    guidance pair stacks [cond rows; uncond rows]) repeats the adapters k times."""

    def __init__(self, base, a, b, scale):
        self.base, self.a, self.b, self.scale = base, a, b, scale

    def __call__(self, x):
        reps = x.shape[0] // self.a.shape[0]
        a, b = jnp.tile(self.a, (reps, 1, 1)), jnp.tile(self.b, (reps, 1, 1))
        low = jnp.einsum("bni,bir->bnr", x, a)
        return self.base(x) + self.scale * jnp.einsum("bnr,bro->bno", low, b)


def lora_rows_module(
    dit_graphdef,
    dit_state: nnx.State,
    stack: dict,
    idx: jax.Array | np.ndarray,
    *,
    scale: float = 1.0,
) -> DiT:
    """The DiT with row r of each batch using adapter `idx[r]` of `stack`, unmerged (SGMV /
    Punica style): every adapted layer computes the shared base output `x @ W` once for the
    whole batch and adds two small batched matmuls `(x @ A[idx]) @ B[idx]`, instead of
    merging a full kernel `W + A_i @ B_i` per row (the `lora_module`-per-row reference).
    Call it on batches of len(idx) rows (or a multiple, as `guided_eps` does); under jit."""
    dit = nnx.merge(dit_graphdef, dit_state)
    for key, ab in stack.items():
        i, name = key.split(".")
        block = dit.blocks[int(i)]
        base = getattr(block, name)
        if ab["a"].shape[1] != base.kernel.shape[0]:
            raise ValueError(
                f"stack: {key} expects kernels with {ab['a'].shape[1]} inputs, "
                f"the model has {base.kernel.shape}"
            )
        object.__setattr__(block, name, _RowLoRA(base, ab["a"][idx], ab["b"][idx], scale))
    return dit


def lora_trainer(
    models: DiffusionModels,
    schedule: Schedule,
    *,
    scale: float = 1.0,
    batch_size: int = 64,
    lr: float = 3e-3,
) -> Trainer:
    """Trainer of one adapter for the frozen `models`' DiT; data = {"images", "labels",
    "edges"} in the target style. Only the adapter's A and B move."""
    gd, state = nnx.split(models)
    dit_gd, dit_state = nnx.split(models.dit)
    opt = optax.adam(lr)

    def loss_fn(adapter, data, key):
        kb, kl = jax.random.split(key)
        b = _minibatch(data, kb, batch_size)
        merged = nnx.merge(gd, state)
        merged.dit = lora_module(dit_gd, dit_state, adapter, scale=scale)
        return diffusion_loss(merged, schedule, b["images"], b["labels"], b["edges"], key=kl)

    def init(adapter) -> TrainState:
        return TrainState(adapter, opt.init(adapter), jnp.zeros((), jnp.int32))

    @jax.jit
    def update(st: TrainState, data, *, key):
        loss, grads = jax.value_and_grad(loss_fn)(st.params, data, key)
        updates, opt_state = opt.update(grads, st.opt_state, st.params)
        return TrainState(optax.apply_updates(st.params, updates), opt_state, st.step + 1), loss

    return Trainer(init, update)


def bold_style(images: np.ndarray) -> np.ndarray:
    """A 'bold' drawing style of digits in [-1, 1]: strokes thickened one pixel rightwards and
    downwards (the target of the style adapter)."""
    x = np.asarray(images)
    right = np.concatenate([x[..., :, :1] * 0 - 1, x[..., :, :-1]], axis=-1)
    down = np.concatenate([x[..., :1, :] * 0 - 1, x[..., :-1, :]], axis=-2)
    return np.maximum(np.maximum(x, right), down)
