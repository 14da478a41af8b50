"""The MoEDiff-SR issue's models on sr_distill's data, as the `moediff_sr` experiment makes them.

MoEDiff-SR (token-gated mixture of conv experts) and the single-expert diffusion model of the
same parameter count are built, initialised, trained and sampled by `moediff_sr`'s own
functions (`moediff_lib.make_models`, `loss_for`, `optimizer`, `predict`) from its config of
the same preset (`config.moe`, read from `experiments/moediff_sr/config.py`), so the comparison
follows that experiment's current recipe. They see exactly the teacher's inputs: the same
training pool (x2/x3/x4 1.5T-like simulations), the same conditioning [corrected bicubic, log
bias, displacement] and the same residual target (HR - corrected bicubic) / residual_scale;
the region masks of the MoE's region-informed gate target come from the training slices'
GM/WM maps, as in `moediff_sr`. Not carried over: `moediff_sr`'s data (clean / noisy
degradations, elastic augmentation) and its validation-based checkpoint selection (here the
last step is used, as for the teacher and the student).
"""

import importlib.util
import pathlib

import distill_lib as lib
import jax
from flax import nnx

import mri_sr_jax as msr

NAMES = ("single_expert", "moediff_sr")


def _moediff_lib():
    path = pathlib.Path(__file__).resolve().parents[1] / "moediff_sr" / "moediff_lib.py"
    spec = importlib.util.spec_from_file_location("moediff_lib", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mlib = _moediff_lib()


def _check(config) -> None:
    m = config.moe
    if m.residual_scale != config.residual_scale:
        raise ValueError(
            f"moe.residual_scale: expected sr_distill's {config.residual_scale} (one residual "
            f"target for all models), got {m.residual_scale}"
        )
    if m.get("region_warmup", 0) or m.get("region_anneal", 0):
        raise ValueError("moe.region_warmup / region_anneal: staged routing is not run here")


def make_models(config, cond_channels: int = 3) -> dict:
    """MoEDiff-SR and the ConvDenoiser matched to its parameter count (`moediff_sr`'s)."""
    _check(config)
    models = mlib.make_models(config.moe, cond_channels)
    return {name: models[name] for name in NAMES}


def train(name, model, pool, config, workdir, *, key):
    """Train (or resume) one model on the shared pool; returns (graphdef, params, s/step)."""
    m = config.moe
    schedule = msr.make_schedule(m.schedule)
    gd, params = nnx.split(model)
    trainer = msr.make_trainer(gd, mlib.loss_for(name, m, schedule), mlib.optimizer(m))
    sample = jax.jit(lambda k: lib.sample_patches(pool, m.patch, m.batch_size, key=k))
    regions = m.num_experts if name == "moediff_sr" else 0

    def inputs(k):
        k1, k2 = jax.random.split(k)
        return lib.to_batch(sample(k1), config, regions=regions), k2

    state, sec = lib.run_loop(
        name,
        trainer.init(params),
        lambda s, step, b, k: trainer.update(s, b, k),
        inputs,
        m.train_steps,
        workdir,
        config,
        key=key,
    )
    return gd, state.params, sec


def predictor(name, gd, config):
    """Jitted (params, cond, key) -> HR estimate: base + residual_scale * sampled residual."""
    m = config.moe
    schedule = msr.make_schedule(m.schedule)
    return jax.jit(
        lambda params, cond, key: mlib.predict(name, gd, params, cond, m, schedule, key=key)
    )
