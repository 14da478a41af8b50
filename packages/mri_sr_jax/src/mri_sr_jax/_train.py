"""Training: SR pairs, losses for the three model families, a data-parallel trainer, sampling.

The diffusion models work on the scaled HR residual x0 = (hr - bicubic(lr)) / residual_scale
(SRDiff), conditioned on cond = [bicubic(lr), guidance maps...]. The trainer is the
NamedTuple(init, update) pattern; `update` is one jitted step which, given a mesh, shards the
batch over its "data" axis and replicates parameters (plain data parallelism: gradients are
batch means, so the result equals the single-device step up to float summation order).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ._losses import (
    DIVERSITY,
    TASK_LOSSES,
    gate_cross_entropy,
    gate_targets,
    load_balance,
    output_similarity,
    reduce_loss,
    token_fractions,
)
from ._moe import aggregate, gate_to_pixels
from ._param import check_parameterisation, to_x0_eps, training_target
from ._samplers import ddim_sample, ddpm_sample, ode_sample
from ._schedules import Schedule
from ._types import Array, Key


class SRBatch(NamedTuple):
    x0: Array  # (b, h, w, 1) scaled residual target
    cond: Array  # (b, h, w, c) bicubic LR (+ guidance maps)
    regions: Array | None = None  # (b, h, w, k) region masks (MoE expert specialisation)


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: Array


class Trainer(NamedTuple):
    init: Callable[[Any], TrainState]
    update: Callable[[TrainState, SRBatch, Key], tuple[TrainState, dict]]


def make_batch(
    hr: Array,
    lr_up: Array,
    guidance: tuple[Array, ...] = (),
    *,
    residual_scale: float = 0.1,
    regions: Array | None = None,
) -> SRBatch:
    """(b, h, w) HR and upsampled LR (+ guidance maps) -> SRBatch (NHWC).

    `regions` (b, h, w, k): optional region masks, one per expert, for `moe_loss`'s
    `region_weight` term (training only; the networks never see them).
    """
    if hr.shape != lr_up.shape or hr.ndim != 3:
        raise ValueError(
            f"hr, lr_up: expected equal (b, h, w) shapes, got {hr.shape}, {lr_up.shape}"
        )
    if residual_scale <= 0:
        raise ValueError(f"residual_scale: expected > 0, got {residual_scale}")
    for g in guidance:
        if g.shape != hr.shape:
            raise ValueError(f"guidance: expected maps of shape {hr.shape}, got {g.shape}")
    if regions is not None and (regions.ndim != 4 or regions.shape[:3] != hr.shape):
        raise ValueError(f"regions: expected masks of shape {hr.shape} + (k,), got {regions.shape}")
    cond = jnp.stack((lr_up, *guidance), axis=-1)
    x0 = ((hr - lr_up) / residual_scale)[..., None]
    regions = None if regions is None else regions.astype(hr.dtype)
    return SRBatch(x0=x0, cond=cond, regions=regions)


def _noised(
    batch: SRBatch,
    key: Key,
    schedule: Schedule,
    num_levels: int | None = None,
    level_fraction: float = 1.0,
):
    """x_t at t ~ U(0, 1); with `num_levels=K` a `level_fraction` of the rows instead take t
    uniformly from the K-step DDIM grid {1/K, ..., 1}."""
    kt, ke = jax.random.split(key)
    b = batch.x0.shape[0]
    t = jax.random.uniform(kt, (b,))
    if num_levels is not None:
        kg, kf = jax.random.split(jax.random.fold_in(kt, 1))
        grid = jax.random.randint(kg, (b,), 1, num_levels + 1) / num_levels
        t = jnp.where(jax.random.uniform(kf, (b,)) < level_fraction, grid, t)
    ab = schedule.alpha_bar(t)
    eps = jax.random.normal(ke, batch.x0.shape)
    a = jnp.sqrt(ab)[:, None, None, None]
    s = jnp.sqrt(1.0 - ab)[:, None, None, None]
    return a * batch.x0 + s * eps, ab, eps


def _check_levels(num_levels, level_fraction):
    if num_levels is not None and (not isinstance(num_levels, int) or num_levels < 1):
        raise ValueError(f"num_levels: expected None or an int >= 1, got {num_levels!r}")
    if not 0.0 <= level_fraction <= 1.0:
        raise ValueError(f"level_fraction: expected a value in [0, 1], got {level_fraction}")


def diffusion_loss(
    model,
    batch: SRBatch,
    key: Key,
    *,
    schedule: Schedule,
    parameterisation: str = "v",
    kind: str = "l1",
    num_levels: int | None = None,
    level_fraction: float = 1.0,
):
    """E_t,eps |net(x_t) - target|: the single-network diffusion objective.

    `num_levels=K` trains a `level_fraction` of each batch on the noise levels a K-step DDIM
    sampler visits (t = k / K) and the rest on t ~ U(0, 1), which concentrates a small
    training budget where few-step sampling needs it (t = 1 is the pure regression problem).
    """
    _check_levels(num_levels, level_fraction)
    x_t, ab, eps = _noised(batch, key, schedule, num_levels, level_fraction)
    target = training_target(batch.x0, eps, ab, parameterisation)
    loss = reduce_loss(model(x_t, batch.cond, ab) - target, kind)
    return loss, {"loss": loss}


MOE_OBJECTIVES = ("aggregate", "gated", "both")


def moe_loss(
    model,
    batch: SRBatch,
    key: Key,
    *,
    schedule: Schedule,
    parameterisation: str = "v",
    kind: str = "l1",
    task_weight: float = 0.1,
    gate_weight: float = 0.01,
    diversity_weight: float = 0.01,
    num_levels: int | None = None,
    level_fraction: float = 1.0,
    gate_temperature: str = "experts",
    region_weight: float = 0.0,
    region_gate: float = 0.0,
    objective: str = "aggregate",
    diversity: str = "balance",
    detach_gate: bool = False,
    region_routing: float = 0.0,
    region_experts: bool = False,
    region_tasks: bool = False,
):
    """MoEDiff-SR objective: diffusion loss + expert task losses + gate terms.

    `objective="aggregate"`: the diffusion loss is on the gate-weighted aggregate and every
    expert's task loss counts fully. `"gated"` (the public code's expert loss): each expert
    has its own diffusion loss, weighted per pixel by its gate probability, and its task loss
    weighted by its mean gate -- an expert is trained where it is routed and the gate is
    pushed towards the expert that does best there (competitive mixture of experts, the
    mechanism that lets experts specialise). `"both"` adds the two.
    `diversity`: "balance" (`load_balance` on the gate) or "similarity" (the public code's
    `output_similarity` on the experts' x0 estimates).
    `num_levels` / `level_fraction`: the noise-level sampling of `diffusion_loss`;
    `gate_temperature`: how `gate_targets` sets the MAD temperature. `region_weight` > 0
    (needs `batch.regions`, k masks for k experts) adds each expert's own L1 x0 error inside
    its region (mean over the region's pixels): expert i becomes the better one in region i,
    which the MAD-tempered gate target then rewards -- the gate itself never sees the masks.
    `region_gate` = beta > 0 (needs `batch.regions`) makes the gate target region-informed:
    softmax(s / T + beta f), expert i favoured by beta MAD units in proportion to the token's
    fraction of region i (`gate_targets(regions=, region_bonus=)`); the gate still sees only
    the conditioning, so at test time it routes from image content alone.
    `detach_gate=True`: the gate weights inside the "gated" expert losses are constants
    (stop-gradient), so the gate learns only from its supervised target (the cross-entropy
    term) and cannot collapse onto whichever expert is ahead early.
    `region_routing` = lambda in [0, 1] (needs `batch.regions`): during training the experts
    are weighted by (1 - lambda) gate + lambda r, r the pixel's region mask (the gate itself
    on pixels outside every region); lambda = 1 routes each expert hard to its region (a
    warm-up before the gate takes over), the gate is still trained by its target.
    `region_experts=True` (needs `batch.regions`): region-specialised experts under the
    learned gate. Only the per-expert terms are restricted: expert i's gated diffusion loss is
    weighted by region i's mask (by the gate on pixels outside every region) and its task loss
    is computed on the region only (`region_task_loss`), while the aggregate (`objective=
    "aggregate"` or `"both"`) and the inference path keep the learned gate, which learns the
    regions from its target. `region_tasks=True` restricts only the task losses to the
    regions (the gated diffusion losses keep the learned gate); `region_experts` implies it.
    """
    _check_levels(num_levels, level_fraction)
    if not 0.0 <= region_routing <= 1.0:
        raise ValueError(f"region_routing: expected a value in [0, 1], got {region_routing}")
    if objective not in MOE_OBJECTIVES:
        raise ValueError(f"objective: expected one of {MOE_OBJECTIVES}, got {objective!r}")
    if diversity not in DIVERSITY:
        raise ValueError(f"diversity: expected one of {DIVERSITY}, got {diversity!r}")
    x_t, ab, eps = _noised(batch, key, schedule, num_levels, level_fraction)
    target = training_target(batch.x0, eps, ab, parameterisation)
    agg, outs, gate = model.forward_all(x_t, batch.cond, ab)
    k = outs.shape[-1]
    region_tasks = region_tasks or region_experts
    if (region_weight or region_gate or region_routing or region_tasks) and (
        batch.regions is None or batch.regions.shape[-1] != k
    ):
        raise ValueError(
            "batch.regions: region_weight / region_gate / region_routing / region_experts / "
            f"region_tasks need {k} region masks, got "
            f"{None if batch.regions is None else batch.regions.shape}"
        )
    g = gate_to_pixels(gate, model.patch, getattr(model, "gate_upsample", "nearest"))
    gate_w = jax.lax.stop_gradient(gate) if detach_gate else gate
    g_w = jax.lax.stop_gradient(g) if detach_gate else g
    if region_routing:
        m = batch.regions
        routed = m + (1.0 - m.sum(-1, keepdims=True)) * g_w
        g_w = (1.0 - region_routing) * g_w + region_routing * routed
        agg = aggregate(outs, g_w)
        f = token_fractions(m, model.patch)
        routed_tokens = f + (1.0 - f.sum(-1, keepdims=True)) * gate_w
        gate_w = (1.0 - region_routing) * gate_w + region_routing * routed_tokens
    if region_experts:  # the experts' own terms follow the regions, the aggregate the gate
        m = batch.regions
        g_w = m + (1.0 - m.sum(-1, keepdims=True)) * g_w
        f = token_fractions(m, model.patch)
        gate_w = f + (1.0 - f.sum(-1, keepdims=True)) * gate_w
    expert_x0, _ = to_x0_eps(outs, jnp.broadcast_to(x_t, outs.shape), ab, parameterisation)
    x0 = batch.x0[..., 0]
    if region_tasks:
        m = batch.regions
        tasks = [region_task_loss(i, expert_x0[..., i], x0, m[..., i]) for i in range(k)]
    else:
        tasks = [TASK_LOSSES[i % len(TASK_LOSSES)](expert_x0[..., i], x0) for i in range(k)]
    main = reduce_loss(agg - target, kind)
    metrics = {"main": main}
    if objective == "aggregate":
        loss, task = main, sum(tasks)
    else:
        per_pixel = jnp.abs(outs - target) if kind == "l1" else (outs - target) ** 2
        gated = (g_w * per_pixel).sum(-1).mean()
        usage = 1.0 / k if region_tasks else gate_w.reshape(-1, k).mean(0)
        task = (usage * jnp.stack(tasks)).sum()
        loss = gated + (main if objective == "both" else 0.0)
        metrics["gated"] = gated
    target_gate = gate_targets(
        expert_x0,
        x0,
        model.patch,
        temperature=gate_temperature,
        regions=batch.regions if region_gate else None,
        region_bonus=region_gate,
    )
    gate_ce = gate_cross_entropy(gate, target_gate)
    if diversity == "balance":
        div = load_balance(gate)
    else:
        div = output_similarity(expert_x0, model.patch)
    loss = loss + task_weight * task + gate_weight * gate_ce + diversity_weight * div
    metrics.update({"task": task, "gate_ce": gate_ce, diversity: div})
    if region_weight:
        err = jnp.abs(expert_x0 - batch.x0)  # (b, h, w, k)
        m = batch.regions
        region = ((err * m).sum((0, 1, 2)) / jnp.maximum(m.sum((0, 1, 2)), 1.0)).sum()
        loss = loss + region_weight * region
        metrics["region"] = region
    return loss, {"loss": loss, **metrics}


def region_task_loss(i: int, x: Array, ref: Array, mask: Array) -> Array:
    """Expert i's task loss (`TASK_LOSSES[i % 3]`) on its region: the loss of the masked
    images x * mask vs ref * mask, divided by the region's share of the batch's pixels (a mean
    over the region, on the whole-image loss's scale; 0 where the batch has no such pixels)."""
    share = mask.mean()
    loss = TASK_LOSSES[i % len(TASK_LOSSES)](x * mask, ref * mask)
    return jnp.where(share > 0, loss / jnp.maximum(share, 1e-3), 0.0)


def regression_loss(model, batch: SRBatch, key: Key, *, kind: str = "l1"):
    """EDSR-lite: predict the residual directly from the conditioning."""
    del key
    loss = reduce_loss(model(batch.cond) - batch.x0, kind)
    return loss, {"loss": loss}


def make_trainer(
    graphdef,
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    *,
    mesh: jax.sharding.Mesh | None = None,
) -> Trainer:
    """`loss_fn(model, batch, key) -> (loss, metrics)`; returns jitted (init, update)."""

    def init(params) -> TrainState:
        return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def step(state: TrainState, batch: SRBatch, key: Key):
        def f(params):
            return loss_fn(nnx.merge(graphdef, params), batch, key)

        (_, metrics), grads = jax.value_and_grad(f, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1), metrics

    if mesh is None:
        return Trainer(init, jax.jit(step, donate_argnums=0))
    repl = jax.sharding.NamedSharding(mesh, jax.P())
    # the first state is placed (replicated) like every later one, so the step compiles once
    # (an unplaced first state made the second call compile it again)
    sharded_init = jax.jit(init, out_shardings=repl)
    data = jax.sharding.NamedSharding(mesh, jax.P("data"))
    update = jax.jit(
        step,
        in_shardings=(repl, data, repl),  # one sharding for every leaf of the batch
        out_shardings=(repl, repl),
        donate_argnums=0,
    )

    def sharded_update(state, batch, key):
        n = mesh.shape["data"]
        if batch.x0.shape[0] % n:
            raise ValueError(f"batch: size {batch.x0.shape[0]} is not divisible by {n} devices")
        return update(state, batch, key)

    return Trainer(sharded_init, sharded_update)


def sample_residual(
    graphdef,
    params,
    cond: Array,
    *,
    key: Key,
    schedule: Schedule,
    sampler: str = "ddim",
    num_steps: int = 20,
    parameterisation: str = "v",
    eta: float = 0.0,
    num_samples: int = 1,
) -> Array:
    """Sample the scaled residual x0 (b, h, w, 1) given cond with DDPM, DDIM or the ODE.

    `num_samples > 1` draws that many independent samples per image (one batched sampler
    run) and returns their mean: a Monte-Carlo estimate of the posterior mean, which is what
    PSNR rewards.
    """
    check_parameterisation(parameterisation)
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: expected an int >= 1, got {num_samples!r}")
    if num_samples > 1:
        reps = jnp.concatenate([cond] * num_samples, axis=0)
        many = sample_residual(
            graphdef,
            params,
            reps,
            key=key,
            schedule=schedule,
            sampler=sampler,
            num_steps=num_steps,
            parameterisation=parameterisation,
            eta=eta,
        )
        return many.reshape((num_samples,) + cond.shape[:-1] + (1,)).mean(0)
    model = nnx.merge(graphdef, params)
    shape = cond.shape[:-1] + (1,)

    def denoise(x, ab):
        return model(x, cond, ab)

    if sampler == "ddpm":
        return ddpm_sample(
            denoise,
            shape,
            schedule,
            key=key,
            num_steps=num_steps,
            parameterisation=parameterisation,
        )
    if sampler == "ddim":
        return ddim_sample(
            denoise,
            shape,
            schedule,
            key=key,
            num_steps=num_steps,
            eta=eta,
            parameterisation=parameterisation,
        )
    if sampler == "ode":
        return ode_sample(
            denoise,
            shape,
            schedule,
            key=key,
            num_steps=num_steps,
            parameterisation=parameterisation,
        )
    raise ValueError(f"sampler: expected 'ddpm', 'ddim' or 'ode', got {sampler!r}")
