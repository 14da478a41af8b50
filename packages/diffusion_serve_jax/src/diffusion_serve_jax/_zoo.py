"""The digits model zoo as servable models, and four workflows that share them.

Models (each one `ModelSpec`, one shared instance): `encoder` (label -> condition vectors),
`edge_adapter` (edge map -> control residuals), `denoiser` and `denoiser_ctrl` (DDIM sampling
with guidance; the same DiT weights, with and without control), `upscaler` (8x8 -> 16x16),
`classifier` (a safety-checker-style judge of the generated digit).

Workflows: `t2i`, `t2i_upscale`, `t2i_checked`, `control_upscale`; with LoRA adapters attached
(`Zoo.lora`, a `lora_stack`), also the model `denoiser_lora` (the shared DiT weights plus the
adapter each request names by index) and the workflow `t2i_lora`; with `ZooConfig.latent`,
also `latent_denoiser` (a DiT over the VAE's 4x4 latents), `vae_decoder` and the latent
text-to-image workflow `t2i_latent` (encoder -> latent_denoiser -> vae_decoder).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ._diffusion import DiffusionModels, Schedule, ddim_sample, make_schedule
from ._lora import lora_module
from ._models import NULL_LABEL, DigitClassifier, DiT, Upscaler
from ._training import classifier_trainer, diffusion_trainer, fit, upscaler_trainer
from ._vae import LATENT_SHAPE, VAE, latent_diffusion_trainer, latent_dit, vae_trainer
from ._workflow import Catalog, ModelSpec, TensorSpec, WorkflowBuilder


@dataclasses.dataclass(frozen=True)
class ZooConfig:
    width: int = 64
    depth: int = 3
    heads: int = 4
    patch: int = 2
    num_timesteps: int = 100
    sample_steps: int = 20
    guidance: float = 2.0
    latent: bool = False  # also a VAE and a latent DiT (workflow `t2i_latent`)
    latent_width: int = 32
    latent_depth: int = 2


@dataclasses.dataclass
class Zoo:
    """Trained (or freshly initialised) modules of the digits zoo."""

    config: ZooConfig
    diffusion: DiffusionModels
    upscaler: Upscaler
    classifier: DigitClassifier
    lora: dict | None = None  # a stack of style adapters (see `lora_stack`)
    lora_scale: float = 1.0
    vae: VAE | None = None
    latent_dit: DiT | None = None

    @property
    def schedule(self) -> Schedule:
        return make_schedule(self.config.num_timesteps)

    @property
    def modules(self) -> dict[str, nnx.Module]:
        """The NNX modules by name (a checkpoint's items; LoRA adapters are plain arrays)."""
        return {
            "diffusion": self.diffusion,
            "upscaler": self.upscaler,
            "classifier": self.classifier,
            "vae": self.vae,
            "latent_dit": self.latent_dit,
        }


def init_zoo(config: ZooConfig = ZooConfig(), *, key: jax.Array) -> Zoo:
    """Freshly initialised zoo modules. Their initialisers run as one jitted program compiled
    without LLVM optimisation: eager initialisation compiled a random-number program per
    parameter shape (~80, ~0.3 s each on a CPU); the values are the eager ones (to float
    rounding)."""
    c = config

    def build(key):
        k1, k2, k3 = jax.random.split(key, 3)
        mods = {
            "diffusion": DiffusionModels(
                width=c.width, depth=c.depth, heads=c.heads, patch=c.patch, rngs=nnx.Rngs(k1)
            ),
            "upscaler": Upscaler(rngs=nnx.Rngs(k2)),
            "classifier": DigitClassifier(rngs=nnx.Rngs(k3)),
        }
        if c.latent:
            kv, kl = jax.random.split(jax.random.fold_in(key, 7))
            mods["vae"] = VAE(rngs=nnx.Rngs(kv))
            mods["latent_dit"] = latent_dit(
                width=c.latent_width,
                depth=c.latent_depth,
                heads=c.heads,
                cond_dim=c.width,
                rngs=nnx.Rngs(kl),
            )
        return mods

    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(key)))
    init = jax.jit(lambda k: nnx.split(build(k))[1]).lower(key)
    state = init.compile(compiler_options={"xla_backend_optimization_level": 0})(key)
    return Zoo(config, **nnx.merge(graphdef, state))


def sample_noise(seeds: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Per-request noise from an integer seed, so results do not depend on batching."""
    return jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(jax.random.key(0), s), shape))(
        seeds
    )


def zoo_model_specs(zoo: Zoo) -> list[ModelSpec]:
    c, sched = zoo.config, zoo.schedule
    w, tokens = c.width, zoo.diffusion.dit.num_tokens
    d_gd, d_params = nnx.split(zoo.diffusion)
    u_gd, u_params = nnx.split(zoo.upscaler)
    k_gd, k_params = nnx.split(zoo.classifier)
    enc_params = nnx.state(zoo.diffusion.encoder)
    enc_gd = nnx.graphdef(zoo.diffusion.encoder)
    ad_params = nnx.state(zoo.diffusion.adapter)
    ad_gd = nnx.graphdef(zoo.diffusion.adapter)
    dit_params = nnx.state(zoo.diffusion.dit)
    dit_gd = nnx.graphdef(zoo.diffusion.dit)
    del d_gd, d_params
    vec, img = TensorSpec((w,)), TensorSpec((8, 8))

    def encoder(p, x):
        enc = nnx.merge(enc_gd, p)
        return {"cond": enc(x["label"]), "uncond": enc(jnp.full_like(x["label"], NULL_LABEL))}

    def adapter(p, x):
        return {"control": nnx.merge(ad_gd, p)(x["edges"])}

    def denoise(p, x, control=None):
        dit = nnx.merge(dit_gd, p)
        noise = sample_noise(x["seed"], (8, 8))
        out = ddim_sample(
            dit,
            x["cond"],
            x["uncond"],
            noise,
            schedule=sched,
            steps=c.sample_steps,
            guidance=c.guidance,
            control=control,
        )
        return {"image": out}

    def upscale(p, x):
        return {"image": nnx.merge(u_gd, p)(x["image"])}

    def denoise_lora(p, x):
        # each row samples with its adapter merged into a copy of the kernels (a vmap): at
        # these sizes faster on a CPU than the unmerged `lora_rows_module` (bench_serving
        # --only variants times both)
        def one(cond, uncond, seed, idx):
            adapter = jax.tree.map(lambda a: a[idx], p["lora"])
            dit = lora_module(dit_gd, p["dit"], adapter, scale=zoo.lora_scale)
            noise = sample_noise(seed[None], (8, 8))
            out = ddim_sample(
                dit,
                cond[None],
                uncond[None],
                noise,
                schedule=sched,
                steps=c.sample_steps,
                guidance=c.guidance,
            )
            return out[0]

        return {"image": jax.vmap(one)(x["cond"], x["uncond"], x["seed"], x["lora"])}

    def classify(p, x):
        return {"probs": jax.nn.softmax(nnx.merge(k_gd, p)(x["image"]), axis=-1)}

    den_in = {"cond": vec, "uncond": vec, "seed": TensorSpec((), "int32")}
    specs = [
        ModelSpec(
            "encoder",
            {"label": TensorSpec((), "int32")},
            {"cond": vec, "uncond": vec},
            encoder,
            enc_params,
        ),
        ModelSpec(
            "edge_adapter", {"edges": img}, {"control": TensorSpec((tokens, w))}, adapter, ad_params
        ),
        ModelSpec("denoiser", den_in, {"image": img}, denoise, dit_params),
        ModelSpec(
            "denoiser_ctrl",
            den_in | {"control": TensorSpec((tokens, w))},
            {"image": img},
            lambda p, x: denoise(p, x, x["control"]),
            dit_params,
        ),
        ModelSpec("upscaler", {"image": img}, {"image": TensorSpec((16, 16))}, upscale, u_params),
        ModelSpec("classifier", {"image": img}, {"probs": TensorSpec((10,))}, classify, k_params),
    ] + (
        []
        if zoo.lora is None
        else [
            ModelSpec(
                "denoiser_lora",
                den_in | {"lora": TensorSpec((), "int32")},
                {"image": img},
                denoise_lora,
                {"dit": dit_params, "lora": zoo.lora},
            )
        ]
    )
    return specs + ([] if zoo.vae is None else latent_specs(zoo, den_in))


def latent_specs(zoo: Zoo, den_in: dict) -> list[ModelSpec]:
    """`latent_denoiser` (DDIM over 4x4 latents) and `vae_decoder` (latent -> 8x8 image)."""
    c, sched = zoo.config, zoo.schedule
    l_gd, l_params = nnx.split(zoo.latent_dit)
    v_gd, v_params = nnx.split(zoo.vae)
    lat = TensorSpec(LATENT_SHAPE)

    def denoise(p, x):
        noise = sample_noise(x["seed"], LATENT_SHAPE)
        out = ddim_sample(
            nnx.merge(l_gd, p),
            x["cond"],
            x["uncond"],
            noise,
            schedule=sched,
            steps=c.sample_steps,
            guidance=c.guidance,
        )
        return {"latent": out}

    def decode(p, x):
        return {"image": nnx.merge(v_gd, p).decode(x["latent"])}

    return [
        ModelSpec("latent_denoiser", den_in, {"latent": lat}, denoise, l_params),
        ModelSpec("vae_decoder", {"latent": lat}, {"image": TensorSpec((8, 8))}, decode, v_params),
    ]


def _conditioned(name: str) -> WorkflowBuilder:
    """The start every zoo workflow shares: label and seed inputs, the condition encoder."""
    label, seed = TensorSpec((), "int32"), TensorSpec((), "int32")
    return (
        WorkflowBuilder(name)
        .input("label", label)
        .input("seed", seed)
        .node("enc", "encoder", label="input.label")
    )


def zoo_workflows(*, lora: bool = False, latent: bool = False) -> list:
    gen_in = {"cond": "enc.cond", "uncond": "enc.uncond", "seed": "input.seed"}
    t2i = _conditioned("t2i").node("gen", "denoiser", **gen_in).output("image", "gen.image")
    up = (
        _conditioned("t2i_upscale")
        .node("gen", "denoiser", **gen_in)
        .node("up", "upscaler", image="gen.image")
        .output("image", "up.image")
    )
    chk = (
        _conditioned("t2i_checked")
        .node("gen", "denoiser", **gen_in)
        .node("check", "classifier", image="gen.image")
        .output("image", "gen.image")
        .output("probs", "check.probs")
    )
    ctl = (
        _conditioned("control_upscale")
        .input("edges", TensorSpec((8, 8)))
        .node("edge", "edge_adapter", edges="input.edges")
        .node("gen", "denoiser_ctrl", control="edge.control", **gen_in)
        .node("up", "upscaler", image="gen.image")
        .output("image", "up.image")
    )
    out = [t2i.build(), up.build(), chk.build(), ctl.build()]
    if lora:
        out.append(
            _conditioned("t2i_lora")
            .input("lora", TensorSpec((), "int32"))
            .node("gen", "denoiser_lora", lora="input.lora", **gen_in)
            .output("image", "gen.image")
            .build()
        )
    if latent:
        out.append(
            _conditioned("t2i_latent")
            .node("gen", "latent_denoiser", **gen_in)
            .node("dec", "vae_decoder", latent="gen.latent")
            .output("image", "dec.image")
            .build()
        )
    return out


def zoo_catalog(zoo: Zoo) -> Catalog:
    cat = Catalog()
    for spec in zoo_model_specs(zoo):
        cat.register_model(spec)
    for wf in zoo_workflows(lora=zoo.lora is not None, latent=zoo.vae is not None):
        cat.register_workflow(wf)
    return cat


def train_zoo(
    zoo: Zoo,
    images: np.ndarray,
    labels: np.ndarray,
    edges: np.ndarray,
    *,
    key: jax.Array,
    diffusion_steps: int,
    aux_steps: int,
    batch_size: int = 128,
    latent_steps: int | None = None,
) -> dict[str, list[float]]:
    """Train every zoo model in place from scratch; returns the loss curves. With a VAE, the
    VAE trains for `aux_steps` and the latent DiT for `latent_steps` (default
    `diffusion_steps`) on its mean latents, conditioned by the trained, frozen encoder."""
    from ._data import downsample2

    kd, kc, ku = jax.random.split(key, 3)
    losses = {}
    gd, params = nnx.split(zoo.diffusion)
    tr = diffusion_trainer(gd, zoo.schedule, batch_size=batch_size)
    data = {
        "images": jnp.asarray(images),
        "labels": jnp.asarray(labels),
        "edges": jnp.asarray(edges),
    }
    state, losses["diffusion"] = fit(tr, tr.init(params), data, diffusion_steps, key=kd)
    nnx.update(zoo.diffusion, state.params)
    gd, params = nnx.split(zoo.classifier)
    tr = classifier_trainer(gd)
    state, losses["classifier"] = fit(tr, tr.init(params), data, aux_steps, key=kc)
    nnx.update(zoo.classifier, state.params)
    gd, params = nnx.split(zoo.upscaler)
    tr = upscaler_trainer(gd)
    up = {"low": jnp.asarray(downsample2(images)), "high": jnp.asarray(images)}
    state, losses["upscaler"] = fit(tr, tr.init(params), up, aux_steps, key=ku)
    nnx.update(zoo.upscaler, state.params)
    if zoo.vae is not None:
        kv, kl = jax.random.split(jax.random.fold_in(key, 11))
        gd, params = nnx.split(zoo.vae)
        tr = vae_trainer(gd, batch_size=batch_size)
        state, losses["vae"] = fit(tr, tr.init(params), data, aux_steps, key=kv)
        nnx.update(zoo.vae, state.params)
        latents = jax.jit(lambda p, x: nnx.merge(gd, p).encode(x)[0])(state.params, data["images"])
        e_gd, e_params = nnx.split(zoo.diffusion.encoder)
        cond_table = jax.jit(lambda p: nnx.merge(e_gd, p)(jnp.arange(NULL_LABEL + 1)))(e_params)
        gd, params = nnx.split(zoo.latent_dit)
        tr = latent_diffusion_trainer(gd, zoo.schedule, cond_table, batch_size=batch_size)
        steps = diffusion_steps if latent_steps is None else latent_steps
        lat_data = {"latents": latents, "labels": data["labels"]}
        state, losses["latent"] = fit(tr, tr.init(params), lat_data, steps, key=kl)
        nnx.update(zoo.latent_dit, state.params)
    return losses
