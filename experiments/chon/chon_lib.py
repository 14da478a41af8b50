"""Helpers of the CHON experiment: corpus, variant policies, stacked runs, outlier stats."""

import pydoc_data.topics
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import fp4_quant as fq


def corpus() -> tuple[np.ndarray, np.ndarray]:
    """Bytes of CPython's pydoc topics (~465K chars of English technical prose): 90/10 split."""
    text = "\n\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    data = np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)
    cut = int(0.9 * len(data))
    return data[:cut], data[cut:]


def batches(data: np.ndarray, rng: np.random.Generator, batch: int, seq: int) -> np.ndarray:
    starts = rng.integers(0, len(data) - seq - 1, size=batch)
    return np.stack([data[s : s + seq + 1] for s in starts])


def ends(n_layers: int) -> tuple[int, ...]:
    """The NVIDIA recipe's high-precision blocks at this depth: the first and the last."""
    return tuple(sorted({0, n_layers - 1}))


def policies(name: str, hcp_k: int, recipe: fq.MatmulRecipe, n_layers: int):
    """(policy, structure) of a variant in the group compiled for `recipe`; the structure
    fixes the compiled graph (every switch the group's variants need), the policy sets the
    runtime gates."""
    # HCP state only in the NVIDIA-recipe graph (CHON's); the MXFP4 graph has no variant using it.
    structure = fq.PrecisionPolicy(default=recipe, hcp_k=hcp_k if recipe == fq.NVIDIA_NVFP4 else 0)
    table = {
        "f32": fq.high_precision_policy(),
        "plain_nvfp4": fq.plain_nvfp4_policy(),
        "plain_mxfp4": fq.PrecisionPolicy(default=fq.PLAIN_MXFP4),
        "nvfp4": fq.PrecisionPolicy(default=recipe),
        "nvfp4_ends": fq.nvidia_policy(high_precision_layers=ends(n_layers)),
        "hcp_only": fq.PrecisionPolicy(default=recipe, hcp_k=hcp_k),
        "postqk_only": fq.PrecisionPolicy(default=recipe, high_precision_names=fq.POST_QK),
        "chon": fq.chon_policy(hcp_k, default=recipe),
    }
    return table[name], structure


# Variants whose format differs from the NVIDIA recipe's (no runtime gate switches the format):
# each such format is a group of its own, i.e. one more compiled training step.
OTHER_FORMATS = {"plain_mxfp4": fq.PLAIN_MXFP4}


def variant_groups(variants: list[str]) -> list[tuple[fq.MatmulRecipe, list[str]]]:
    """Variants sharing one graph: the NVIDIA recipe's (f32, i.e. quantization off, plain NVFP4,
    i.e. SR, RHT and 2-D weight blocks off, and the recipe with its first/last blocks in high
    precision ride along through runtime gates), then one group per other format."""
    groups = [(fq.NVIDIA_NVFP4, [v for v in variants if v not in OTHER_FORMATS])]
    for name, recipe in OTHER_FORMATS.items():
        if name in variants:
            groups.append((recipe, [name]))
    return groups


def build_runs(cfg, arch: str, recipe, names: list[str], n_seeds: int, seed: int):
    """Stacked TrainState over runs (variant-major, seed-minor) plus graphdef and optimizer.
    Paired seeds: run (v, s) starts from the same parameters and sees the same batches for all v."""
    mcfg = fq.ModelConfig(
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        seq_len=cfg.seq_len,
        mixer=arch,
        hcp_period=cfg.hcp_period,
    )
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup, cfg.steps, cfg.lr * 0.1)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.01))
    states, graphdef = [], None
    for name in names:
        policy, structure = policies(name, cfg.hcp_k, recipe, cfg.n_layers)
        for s in range(n_seeds):
            model = fq.DecoderLM(mcfg, policy, rngs=nnx.Rngs(seed + s), structure=structure)
            g, st = fq.init_train_state(model, opt)
            graphdef = graphdef or g
            states.append(st)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *states)
    return graphdef, stacked, opt


def unstack(tree, i: int):
    return jax.tree.map(lambda a: a[i], tree)


def planted_check(key, trials: int, hcp_k: int = 4) -> dict[str, float]:
    """Matmul error of NVFP4 vs NVFP4+HCP on activations with planted persistent hot channels;
    the channels are found online by the HCP state (not told). Medians over trials."""
    hcp = fq.hot_channel_patch(hcp_k, period=1, decay=0.5, recipe=fq.NVIDIA_NVFP4)

    @jax.jit
    def trial(k):
        kx, kw, kc = jax.random.split(k, 3)
        hot = jax.random.choice(kc, 256, (hcp_k,), replace=False).astype(jnp.int32)
        w = 0.05 * jax.random.normal(kw, (256, 128))
        state = hcp.init(256)
        for step in range(3):
            x = jax.random.normal(jax.random.fold_in(kx, step), (128, 256))
            x = x.at[:, hot].multiply(50.0)
            state = hcp.update(state, x, w)
        plain = fq.quantization_sensitivity(x, w, fq.NVIDIA_NVFP4)
        patched = fq.quantization_sensitivity(x, w, fq.NVIDIA_NVFP4, state.channels)
        return plain, patched, fq.topk_overlap(state.channels, hot)

    res = np.asarray([trial(jax.random.fold_in(key, t)) for t in range(trials)])
    return {
        "plain": float(np.median(res[:, 0])),
        "hcp": float(np.median(res[:, 1])),
        "found": float(np.mean(res[:, 2])),
    }


_LINEAR = re.compile(r"\['blocks'\]\[(\d+)\]\['(\w+)'\]")


def layer_stats(inputs: dict, k: int) -> dict[str, dict]:
    """Per linear (`L<layer>.<projection>`): kurtosis of its input, the top-k hot channels
    (largest mean |x|), their share of the input's energy (sum of squares; k / channels if
    the energy were spread evenly) and the flush-to-zero rate under NVFP4."""
    out = {}
    for path, v in inputs.items():
        x = v[0] if isinstance(v, tuple) else v
        x = x.reshape(-1, x.shape[-1])
        layer, proj = _LINEAR.search(path).groups()
        top = fq.top_k_channels(x, k)
        energy = fq.channel_stats(x)["rms"] ** 2
        out[f"L{layer}.{proj}"] = {
            "layer": int(layer),
            "proj": proj,
            "channels": int(x.shape[-1]),
            "kurtosis": float(fq.kurtosis(x)),
            "top": np.asarray(top),
            "share": float(jnp.sum(energy[top]) / jnp.maximum(jnp.sum(energy), 1e-30)),
            "ftz": float(fq.flush_to_zero_rate(x, fq.NVIDIA_NVFP4)),
        }
    return dict(
        sorted(out.items(), key=lambda kv: (kv[1]["layer"], PROJ_ORDER.index(kv[1]["proj"])))
    )


PROJ_ORDER = ["qkv_proj", "gk_proj", "gk_proj2", "o_proj", "up_gate_proj", "down_proj"]
