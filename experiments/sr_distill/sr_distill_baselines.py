"""The MoEDiff-SR issue's models on sr_distill's data, through mri_sr_jax's public API only.

MoEDiff-SR (token-gated mixture of conv experts) and the single-expert diffusion model of the
same parameter count, built, trained and sampled with the library's public functions (the
`moediff_sr` experiment is not imported), so whatever MoEDiff-SR training the library ships is
what is compared. They see exactly the teacher's inputs: the same training pool (x2/x3/x4
1.5T-like simulations), the same conditioning [corrected bicubic, log bias, displacement] and
the same residual target (HR - corrected bicubic) / residual_scale.
"""

import distill_lib as lib
import jax
from flax import nnx

import mri_sr_jax as msr

NAMES = ("single_expert", "moediff_sr")


def make_models(config, cond_channels: int = 3) -> dict:
    """MoEDiff-SR and a ConvDenoiser widened to (about) its parameter count."""
    m = config.moe
    moe = msr.init_fast(
        lambda: msr.MoEDiffSR(
            cond_channels,
            num_experts=m.num_experts,
            expert_width=m.expert_width,
            expert_depth=m.expert_depth,
            feature_dim=m.feature_dim,
            patch_sizes=tuple(m.patch_sizes),
            emb_dim=m.emb_dim,
            rngs=nnx.Rngs(0),
        ),
        seed=config.seed + 3,
    )
    target = msr.count_params(moe)
    width = msr.conv_denoiser_width(cond_channels, m.expert_depth, m.emb_dim, target)
    single = msr.init_fast(
        lambda: msr.ConvDenoiser(cond_channels, width, m.expert_depth, m.emb_dim, rngs=nnx.Rngs(0)),
        seed=config.seed + 4,
    )
    return {"single_expert": single, "moediff_sr": moe}


def loss_for(name, config, schedule):
    m = config.moe
    levels = dict(num_levels=m.train_levels, level_fraction=m.level_fraction)
    if name == "moediff_sr":
        return lambda model, b, k: msr.moe_loss(
            model, b, k, schedule=schedule, parameterisation=m.parameterisation, **levels
        )
    return lambda model, b, k: msr.diffusion_loss(
        model, b, k, schedule=schedule, parameterisation=m.parameterisation, **levels
    )


def train(name, model, sample, config, schedule, workdir, *, key):
    """Train (or resume) one model on the shared pool; returns (graphdef, params, s/step)."""
    gd, params = nnx.split(model)
    steps = config.moe.train_steps
    trainer = msr.make_trainer(
        gd, loss_for(name, config, schedule), lib.adam(config.moe.learning_rate, steps)
    )

    def inputs(k):
        k1, k2 = jax.random.split(k)
        return lib.to_batch(sample(k1), config), k2

    state, sec = lib.run_loop(
        name,
        trainer.init(params),
        lambda s, step, b, k: trainer.update(s, b, k),
        inputs,
        steps,
        workdir,
        config,
        key=key,
    )
    return gd, state.params, sec


def predictor(gd, config, schedule):
    """Jitted (params, cond, key) -> HR estimate: base + residual_scale * DDIM residual."""
    m = config.moe

    def predict(params, cond, key):
        res = msr.sample_residual(
            gd,
            params,
            cond,
            key=key,
            schedule=schedule,
            sampler="ddim",
            num_steps=m.sample_steps,
            parameterisation=m.parameterisation,
        )
        return cond[..., 0] + config.residual_scale * res[..., 0]

    return jax.jit(predict)
