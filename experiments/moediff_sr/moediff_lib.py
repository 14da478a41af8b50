"""Data pools, models and evaluation shared by the MoEDiff-SR experiment (and sr_distill)."""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import mri_sr_jax as msr


def degrade_config(config, scale: int, condition: str) -> msr.DegradeConfig:
    """ "clean": blur + decimation only; "noisy": plus bias field and Rician noise."""
    if condition == "clean":
        return msr.DegradeConfig(scale=scale)
    return msr.DegradeConfig(
        scale=scale,
        noise_sigma=config.noise_sigma,
        bias_strength=config.bias_strength,
        bias_mean=config.get("bias_mean", "geometric"),
    )


def load_split(config):
    """HR slices (n, h, w) and GM/WM maps of the training, held-out test and validation slabs.

    Returns `(train, test, val, train_idx, test_idx, val_idx)` (`msr.train_val_test_split`).
    Validation slabs (`config.val_slabs`, every `config.val_stride`-th slice) serve every
    model / variant choice and early stopping; the test slabs only the final numbers.
    """
    return msr.train_val_test_split(
        msr.load_mni152(),
        config.test_slabs,
        config.get("val_slabs", []),
        gap=config.slab_gap,
        min_brain=config.min_brain,
        train_stride=config.train_stride,
        test_stride=config.test_stride,
        val_stride=config.get("val_stride", 1),
        crop=tuple(config.crop),
    )


@functools.partial(jax.jit, static_argnums=2)
def _augment(stack, key, amplitude):
    keys = jax.random.split(key, stack.shape[0])
    return jax.vmap(lambda im, k: msr.elastic_intensity_augment(im, key=k, amplitude=amplitude))(
        stack, keys
    )


def build_pool(train, config, *, key):
    """Degraded training realisations (augmented, several conditions) of every train slice.

    Returns arrays on the HR grid: hr, lr_up, bias, gradwarp of shape (n_pool, h, w) and the
    region label map (n_pool, h, w) (0 none, i + 1 region i of `msr.REGIONS`, which are
    disjoint), from the augmented GM/WM maps.
    """
    t1, gm, wm = train
    hrs, ups, biases, warps, labels = [], [], [], [], []
    stack = jnp.stack([t1, gm, wm], axis=-1)
    for r in range(config.pool_repeats):
        for scale in config.train_scales:
            for condition in config.train_conditions:
                key, ka, kd = jax.random.split(key, 3)
                aug = _augment(stack, ka, config.elastic_px) if r else stack
                dc = degrade_config(config, scale, condition)
                d = msr.degrade_batch(aug[..., 0], aug[..., 1], aug[..., 2], dc, key=kd)
                hrs.append(d.hr)
                ups.append(_upsample(d.lr, d.hr.shape[1:]))
                biases.append(d.bias)
                warps.append(d.gradwarp)
                masks = msr.region_masks(aug[..., 1], aug[..., 2])
                labels.append((masks * jnp.arange(1, masks.shape[-1] + 1)).max(-1))
    cat = lambda xs: jnp.concatenate(xs)  # noqa: E731
    return cat(hrs), cat(ups), cat(biases), cat(warps), cat(labels).astype(jnp.int32)


def region_onehot(labels, k: int = 3):
    """Label map (b, h, w) -> float masks (b, h, w, k) (label 0 = no region)."""
    return jax.nn.one_hot(labels - 1, k)


_upsample = jax.jit(msr.upsample, static_argnums=(1, 2))


def sample_patches(pool, patch: int, batch: int, *, key):
    """Random (hr, lr_up, bias, gradwarp) patches, rejecting mostly-background positions."""
    hr = pool[0]
    n, h, w = hr.shape
    k1, k2, k3 = jax.random.split(key, 3)
    cand = 4 * batch
    idx = jax.random.randint(k1, (cand,), 0, n)
    ys = jax.random.randint(k2, (cand,), 0, h - patch + 1)
    xs = jax.random.randint(k3, (cand,), 0, w - patch + 1)

    def crop(a, i, y, x):
        return jax.lax.dynamic_slice(a[i], (y, x), (patch, patch))

    crops = [jax.vmap(crop, in_axes=(None, 0, 0, 0))(a, idx, ys, xs) for a in pool]
    fg = (crops[0] > 0.05).mean(axis=(1, 2))
    keep = jnp.argsort(-fg)[:batch]
    return tuple(c[keep] for c in crops)


def make_models(config, cond_channels: int = 1):
    """MoEDiff-SR, a single expert of (about) the same parameter count, and EDSR-lite."""
    moe = msr.init_fast(
        lambda: msr.MoEDiffSR(
            cond_channels,
            num_experts=config.num_experts,
            expert_width=config.expert_width,
            expert_depth=config.expert_depth,
            feature_dim=config.feature_dim,
            patch_sizes=tuple(config.patch_sizes),
            transformer_depth=config.transformer_depth,
            emb_dim=config.emb_dim,
            trunk_depth=config.get("trunk_depth", 0),
            fuse_features=config.get("fuse_features", False),
            gate_upsample=config.get("gate_upsample", "nearest"),
            gate_local_norm=config.get("gate_local_norm", 0),
            gate_norm=config.get("gate_norm", "divide"),
            head_width=config.get("head_width", 0),
            noise_routing=config.get("noise_routing", "none"),
            noise_knots=config.get("noise_knots", 5),
            scale_input=config.scale_input,
            rngs=nnx.Rngs(0),
        ),
        seed=config.seed,
    )
    target = msr.count_params(moe)
    # same depth as one expert's path, unless `single_depth` fixes it (session 8: experts with
    # their own blocks keep the 3-block single expert of sessions 4-7 as the reference)
    depth = config.get("single_depth", 0) or config.expert_depth + config.get("trunk_depth", 0)
    width = msr.conv_denoiser_width(cond_channels, depth, config.emb_dim, target)
    single = msr.init_fast(
        lambda: msr.ConvDenoiser(
            cond_channels,
            width,
            depth,
            config.emb_dim,
            scale_input=config.scale_input,
            rngs=nnx.Rngs(0),
        ),
        seed=config.seed + 1,
    )
    edsr = msr.init_fast(
        lambda: msr.EDSRLite(cond_channels, width, depth, rngs=nnx.Rngs(0)),
        seed=config.seed + 2,
    )
    models = {"moediff_sr": moe, "single_expert": single, "edsr_lite": edsr}
    if config.zero_init_output:
        for m in models.values():
            zero_output_layers(m)
    if config.get("zero_init_film", False):
        for m in models.values():
            zero_film_layers(m)
    if config.get("zero_init_gate", False):  # uniform routing until the gate has learned
        moe.gate.kernel[...] = jnp.zeros_like(moe.gate.kernel[...])
    prior = config.get("noise_band_prior", 0.0)
    if prior:  # session 10: expert i starts favoured by `prior` logits on the i-th noise band
        if config.get("noise_routing", "none") != "bands":
            raise ValueError("noise_band_prior: needs noise_routing='bands'")
        bias = np.zeros(moe.vary_with_noise.bias.shape, np.float32)
        # knot 0 is gamma = 0 (t = 1, pure noise): expert 0 takes the noisiest band
        for i, rows in enumerate(np.array_split(np.arange(bias.shape[0]), bias.shape[1])):
            bias[rows, i] = prior
        moe.vary_with_noise.bias[...] = jnp.asarray(bias)
    if config.get("identical_experts", False):  # every expert starts as a copy of expert 0
        first = nnx.state(moe.experts[0])
        for e in moe.experts[1:]:
            nnx.update(e, jax.tree.map(jnp.copy, first))
    return models


def zero_film_layers(model) -> None:
    """Zero every FiLM projection: each residual block starts unmodulated (scale 1, shift 0)
    instead of multiplying its channels by random 1 + N(0, 1) factors."""
    for path, node in nnx.iter_graph(model):
        if path and path[-1] == "film" and isinstance(node, nnx.Linear):
            node.kernel[...] = jnp.zeros_like(node.kernel[...])


def zero_output_layers(model) -> None:
    """Zero every final `out` convolution: each network starts as "residual 0" = bicubic."""
    for path, node in nnx.iter_graph(model):
        if path and path[-1] == "out" and isinstance(node, nnx.Conv):
            node.kernel[...] = jnp.zeros_like(node.kernel[...])


def loss_for(name, config, schedule, *, region_routing=None):
    """Training loss of one model; `region_routing` overrides the MoE's config value (the
    hard-routing warm-up uses 1.0)."""
    if name == "moediff_sr":
        routing = config.get("region_routing", 0.0) if region_routing is None else region_routing
        return lambda m, b, k: msr.moe_loss(
            m,
            b,
            k,
            schedule=schedule,
            parameterisation=config.parameterisation,
            task_weight=config.task_weight,
            gate_weight=config.gate_weight,
            diversity_weight=config.diversity_weight,
            gate_temperature=config.gate_temperature,
            region_weight=config.region_weight,
            region_gate=config.get("region_gate", 0.0),
            objective=config.get("moe_objective", "aggregate"),
            diversity=config.get("diversity", "balance"),
            num_levels=config.get("train_levels"),
            level_fraction=config.get("level_fraction", 1.0),
            detach_gate=config.get("detach_gate", False),
            region_routing=routing,
            region_experts=config.get("region_experts", False),
            region_tasks=config.get("region_tasks", False),
        )
    if name == "edsr_lite":
        return msr.regression_loss
    return lambda m, b, k: msr.diffusion_loss(
        m,
        b,
        k,
        schedule=schedule,
        parameterisation=config.parameterisation,
        num_levels=config.get("train_levels"),
        level_fraction=config.get("level_fraction", 1.0),
    )


def optimizer(config):
    sched = optax.cosine_decay_schedule(config.learning_rate, config.train_steps, alpha=0.1)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched))


def predict(name, graphdef, params, cond, config, schedule, *, key, sampler=None, num_steps=None):
    """HR prediction (b, h, w) = bicubic + residual_scale * model residual."""
    if name == "edsr_lite":
        res = nnx.merge(graphdef, params)(cond)
    else:
        res = msr.sample_residual(
            graphdef,
            params,
            cond,
            key=key,
            schedule=schedule,
            sampler=sampler or config.sampler,
            num_steps=num_steps or config.sample_steps,
            parameterisation=config.parameterisation,
            num_samples=config.num_samples,
        )
    return cond[..., 0] + config.residual_scale * res[..., 0]


def timed(fn, *args, repeats: int = 1):
    """(result, median seconds) of a jitted call after one warm-up."""
    out = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))
