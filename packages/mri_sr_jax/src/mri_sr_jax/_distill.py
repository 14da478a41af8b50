"""Progressive distillation of a guided diffusion teacher into a small multi-scale student.

One stage trains the student to take `num_steps` DDIM steps on the grid t_i = 1 - i / num_steps
(the grid of `ddim_sample`). At a grid point the student sees the forward-noised residual z_t
and regresses on the target net's output over the same interval:

- `substeps=1`: the target net's x0 estimate at z_t (size distillation at equal steps);
- `substeps=2`: two target-net DDIM steps t -> (t + s) / 2 -> s, turned into the x0 that one
  DDIM step t -> s must use to land on the same z_s (Salimans & Ho 2022): step halving.

Stage k > 0 uses the student of stage k - 1 as its target net, so the steps halve stage by stage.
The paper's two further ingredients: (i) feature guidance, a FitNets-style loss between the
teacher's inference-phase feature maps at z_t and 1x1-adapted student features at chosen layers;
(ii) a curriculum of progressively sharper targets, the x0 target blurred with a Gaussian whose
sigma walks down `curriculum_sigmas` (10 levels in the public code) to 0 during each stage.
All losses are in v-space (x0 error / sigma_t: Salimans & Ho's "SNR + 1" weighting).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ._samplers import ddim_sample
from ._schedules import Schedule
from ._train import SRBatch
from ._types import Array, Channels, CondChannels, Float, Image, Key

BLUR_RADIUS = 6  # taps each side of the curriculum blur: exact for sigma <= 2


class DistillState(NamedTuple):
    params: Any  # {"student": nnx.State, "adapters": nnx.State}
    opt_state: Any
    step: Array


class Distiller(NamedTuple):
    init: Callable[[Any, Any], DistillState]
    update: Callable[..., tuple[DistillState, dict]]


def curriculum_sigmas(levels: int = 10, sigma_max: float = 1.5) -> np.ndarray:
    """Blur sigmas of the target curriculum, sharper each level: linear from sigma_max to 0."""
    if levels < 1:
        raise ValueError(f"levels: expected >= 1, got {levels}")
    if not 0.0 <= sigma_max <= 2.0:
        raise ValueError(
            f"sigma_max: expected in [0, 2] (blur radius {BLUR_RADIUS}), got {sigma_max}"
        )
    if levels == 1:
        return np.zeros(1, np.float32)
    return np.linspace(sigma_max, 0.0, levels).astype(np.float32)


def curriculum_level(step: int, stage_steps: int, levels: int) -> int:
    """Level (0 = blurriest) at `step` of a stage: `levels` equal blocks, the last the sharpest."""
    if stage_steps < 1:
        raise ValueError(f"stage_steps: expected >= 1, got {stage_steps}")
    return min(int(step) * levels // stage_steps, levels - 1)


def blur_target(x: Channels, sigma: Array) -> Channels:
    """Separable Gaussian blur of (b, h, w, c) with a traced sigma (sigma = 0: identity)."""
    t = jnp.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=jnp.float32)
    k = jnp.exp(-0.5 * t**2 / jnp.maximum(sigma, 1e-3) ** 2)
    k = k / k.sum()
    pad = ((0, 0), (BLUR_RADIUS, BLUR_RADIUS), (BLUR_RADIUS, BLUR_RADIUS), (0, 0))
    p = jnp.pad(x, pad, mode="reflect")
    n, m = x.shape[1], x.shape[2]
    p = sum(k[i] * p[:, i : i + n, :, :] for i in range(2 * BLUR_RADIUS + 1))
    return sum(k[i] * p[:, :, i : i + m, :] for i in range(2 * BLUR_RADIUS + 1))


def _col(a: Array) -> Array:
    return a[:, None, None, None]


def ddim_step(z_t: Array, x0: Array, ab_t: Array, ab_s: Array) -> Array:
    """Deterministic DDIM step t -> s given the x0 estimate (ab_* per batch row)."""
    eps = (z_t - jnp.sqrt(_col(ab_t)) * x0) / jnp.sqrt(1.0 - _col(ab_t))
    return jnp.sqrt(_col(ab_s)) * x0 + jnp.sqrt(1.0 - _col(ab_s)) * eps


def v_to_x0(v: Array, z_t: Array, ab_t: Array) -> Array:
    return jnp.sqrt(_col(ab_t)) * z_t - jnp.sqrt(1.0 - _col(ab_t)) * v


def x0_to_v(x0: Array, z_t: Array, ab_t: Array) -> Array:
    return (jnp.sqrt(_col(ab_t)) * z_t - x0) / jnp.sqrt(1.0 - _col(ab_t))


def teacher_target(denoise, z_t, ab_t, ab_mid, ab_s, substeps: int) -> Array:
    """x0 target for one student step t -> s from a v-predicting `denoise(z, ab)` (see module)."""
    x0 = v_to_x0(denoise(z_t, ab_t), z_t, ab_t)
    if substeps == 1:
        return x0
    z_mid = ddim_step(z_t, x0, ab_t, ab_mid)
    z_s = ddim_step(z_mid, v_to_x0(denoise(z_mid, ab_mid), z_mid, ab_mid), ab_mid, ab_s)
    a_t, s_t = jnp.sqrt(_col(ab_t)), jnp.sqrt(1.0 - _col(ab_t))
    a_s, s_s = jnp.sqrt(_col(ab_s)), jnp.sqrt(1.0 - _col(ab_s))
    return (z_s - (s_s / s_t) * z_t) / (a_s - (s_s / s_t) * a_t)


def grid_alpha_bars(schedule: Schedule, num_steps: int) -> Array:
    """alpha_bar on ddim_sample's grid t = 1 - i / num_steps, i = 0..num_steps (last = 1)."""
    t = jnp.linspace(1.0, 0.0, num_steps + 1)
    return schedule.alpha_bar(t).at[-1].set(1.0)


def feature_loss(student_feats: dict, teacher_feats: dict) -> Array:
    """Sum over layers of mean squared error / mean square of the teacher feature."""
    total = 0.0
    for name, fs in student_feats.items():
        ft = jax.lax.stop_gradient(teacher_feats[name])
        total = total + jnp.mean((fs - ft) ** 2) / (jnp.mean(ft**2) + 1e-6)
    return total


def distill_loss(
    params,
    student_gd,
    adapter_gd,
    teacher,
    target,
    batch: SRBatch,
    key: Key,
    blur_sigma: Array,
    *,
    schedule: Schedule,
    num_steps: int,
    substeps: int,
    feature_weight: float,
):
    """One distillation objective evaluation; `teacher`, `target` are (graphdef, params)."""
    student = nnx.merge(student_gd, params["student"])
    adapters = nnx.merge(adapter_gd, params["adapters"])
    t_net, tgt_net = nnx.merge(*teacher), nnx.merge(*target)
    b = batch.x0.shape[0]
    ki, ke = jax.random.split(key)
    i = jax.random.randint(ki, (b,), 0, num_steps)
    t = 1.0 - i / num_steps
    s = 1.0 - (i + 1) / num_steps
    ab_t = schedule.alpha_bar(t)
    ab_mid = schedule.alpha_bar(0.5 * (t + s))
    ab_s = jnp.where(i + 1 == num_steps, 1.0, schedule.alpha_bar(s))
    eps = jax.random.normal(ke, batch.x0.shape)
    z_t = jnp.sqrt(_col(ab_t)) * batch.x0 + jnp.sqrt(1.0 - _col(ab_t)) * eps

    x0_target = teacher_target(
        lambda z, ab: tgt_net(z, batch.cond, ab), z_t, ab_t, ab_mid, ab_s, substeps
    )
    x0_target = jax.lax.stop_gradient(blur_target(x0_target, blur_sigma))
    out, feats = student(z_t, batch.cond, ab_t, return_features=True)
    out_loss = jnp.mean(jnp.abs(out - x0_to_v(x0_target, z_t, ab_t)))
    metrics = {"loss_out": out_loss}
    loss = out_loss
    if feature_weight > 0 and adapters.layers:
        _, t_feats = t_net(z_t, batch.cond, ab_t, return_features=True)
        f_loss = feature_loss(adapters({n: feats[n] for n in adapters.layers}), t_feats)
        loss = loss + feature_weight * f_loss
        metrics["loss_feat"] = f_loss
    metrics["loss"] = loss
    return loss, metrics


def make_distiller(
    student_gd,
    adapter_gd,
    teacher_gd,
    target_gd,
    optimizer: optax.GradientTransformation,
    *,
    schedule: Schedule,
    num_steps: int,
    substeps: int = 2,
    feature_weight: float = 0.1,
    mesh: jax.sharding.Mesh | None = None,
) -> Distiller:
    """One distillation stage as (init, update).

    `target_gd` is the graphdef of the net whose steps the student learns (the teacher in stage
    0, the previous student after). `init(student_params, adapter_params)`;
    `update(state, teacher_params, target_params, batch, key, blur_sigma)`; with a mesh the
    batch is split over its "data" axis and everything else replicated (equal to one device
    up to summation order).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps: expected >= 1, got {num_steps}")
    if substeps not in (1, 2):
        raise ValueError(f"substeps: expected 1 or 2, got {substeps}")
    if not feature_weight >= 0:
        raise ValueError(f"feature_weight: expected >= 0, got {feature_weight}")

    def init(student_params, adapter_params) -> DistillState:
        params = jax.tree.map(jnp.copy, {"student": student_params, "adapters": adapter_params})
        return DistillState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def step(state, teacher_params, target_params, batch, key, blur_sigma):
        def f(params):
            return distill_loss(
                params,
                student_gd,
                adapter_gd,
                (teacher_gd, teacher_params),
                (target_gd, target_params),
                batch,
                key,
                blur_sigma,
                schedule=schedule,
                num_steps=num_steps,
                substeps=substeps,
                feature_weight=feature_weight,
            )

        (_, metrics), grads = jax.value_and_grad(f, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return DistillState(params, opt_state, state.step + 1), metrics

    if mesh is None:
        jitted = jax.jit(step, donate_argnums=0)
    else:
        repl = jax.sharding.NamedSharding(mesh, jax.P())
        data = jax.sharding.NamedSharding(mesh, jax.P("data"))
        jitted = jax.jit(
            step,
            in_shardings=(repl, repl, repl, SRBatch(data, data), repl, repl),
            out_shardings=(repl, repl),
            donate_argnums=0,
        )

    def update(state, teacher_params, target_params, batch: SRBatch, key: Key, blur_sigma=0.0):
        if batch.x0.ndim != 4 or batch.cond.shape[:3] != batch.x0.shape[:3]:
            raise ValueError(
                f"batch: expected x0 (b, h, w, 1) and cond (b, h, w, c), "
                f"got {batch.x0.shape}, {batch.cond.shape}"
            )
        if mesh is not None and batch.x0.shape[0] % mesh.shape["data"]:
            raise ValueError(
                f"batch: size {batch.x0.shape[0]} is not divisible by {mesh.shape['data']} devices"
            )
        sigma = jnp.asarray(blur_sigma, jnp.float32)
        return jitted(state, teacher_params, target_params, batch, key, sigma)

    return Distiller(init, update)


def _check_sample(cond, num_steps):
    if cond.ndim != 4:
        raise ValueError(f"cond: expected (batch, h, w, channels), got shape {cond.shape}")
    if num_steps < 1:
        raise ValueError(f"num_steps: expected >= 1, got {num_steps}")


def sample_sr(
    graphdef,
    params,
    cond: Float[Array, "*batch height width cond_channels"],
    *,
    key: Key,
    schedule: Schedule,
    num_steps: int,
    residual_scale: float = 0.1,
) -> Float[Array, "*batch height width"]:
    """HR estimate (b, h, w) = bicubic + residual_scale * DDIM sample of the residual (v-net);
    one slice's (h, w, c) gives (h, w), as under vmap."""
    _check_sample(cond, num_steps)
    model = nnx.merge(graphdef, params)
    res = ddim_sample(
        lambda x, ab: model(x, cond, ab),
        cond.shape[:-1] + (1,),
        schedule,
        key=key,
        num_steps=num_steps,
        parameterisation="v",
    )
    return cond[..., 0] + residual_scale * res[..., 0]


def sample_sr_reference(
    graphdef,
    params,
    cond: CondChannels,
    *,
    key: Key,
    schedule: Schedule,
    num_steps: int,
    residual_scale: float = 0.1,
) -> Image:
    """`sample_sr` as a plain Python loop of `ddim_step` on `grid_alpha_bars`."""
    _check_sample(cond, num_steps)
    model = nnx.merge(graphdef, params)
    ab = grid_alpha_bars(schedule, num_steps)
    _, k0 = jax.random.split(key)
    z = jax.random.normal(k0, cond.shape[:-1] + (1,))
    b = cond.shape[0]
    for i in range(num_steps):
        ab_t, ab_s = jnp.full((b,), ab[i]), jnp.full((b,), ab[i + 1])
        z = ddim_step(z, v_to_x0(model(z, cond, ab_t), z, ab_t), ab_t, ab_s)
    return cond[..., 0] + residual_scale * z[..., 0]


def halving_schedule(teacher_steps: int, stages: int) -> list[tuple[int, int]]:
    """[(student steps, substeps)] per stage: stage 0 at the teacher's steps (size only), then
    each stage halves the steps. Raises if the steps cannot halve that often."""
    if teacher_steps < 1 or stages < 1:
        raise ValueError(f"teacher_steps, stages: expected >= 1, got {teacher_steps}, {stages}")
    if teacher_steps % 2 ** (stages - 1):
        raise ValueError(
            f"teacher_steps: {teacher_steps} cannot be halved {stages - 1} times exactly"
        )
    return [(teacher_steps, 1)] + [(teacher_steps // 2**k, 2) for k in range(1, stages)]
