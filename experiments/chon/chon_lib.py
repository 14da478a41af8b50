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


def policies(name: str, hcp_k: int, default: fq.MatmulRecipe):
    """(policy, structure) of a variant; the structure fixes the compiled graph."""
    structure = fq.PrecisionPolicy(default=default, hcp_k=hcp_k)  # every switch present
    table = {
        "f32": fq.high_precision_policy(),
        "plain_nvfp4": fq.plain_nvfp4_policy(),
        "nvfp4": fq.PrecisionPolicy(default=default),
        "hcp_only": fq.PrecisionPolicy(default=default, hcp_k=hcp_k),
        "postqk_only": fq.PrecisionPolicy(default=default, high_precision_names=fq.POST_QK),
        "chon": fq.chon_policy(hcp_k, default=default),
    }
    return table[name], structure


def variant_groups(variants: list[str]) -> list[tuple[fq.MatmulRecipe, list[str]]]:
    """Variants sharing one graph: the NVIDIA recipe's; f32 (quantization off) and plain NVFP4
    (SR, RHT and 2-D weight blocks off) ride along through runtime gates."""
    return [(fq.NVIDIA_NVFP4, list(variants))]


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
        policy, structure = policies(name, cfg.hcp_k, recipe)
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


def layer_stats(inputs: dict, k: int) -> dict[str, dict]:
    """Per-linear kurtosis, top-k hot channels and flush-to-zero rate of its input."""
    out = {}
    for path, v in inputs.items():
        x = v[0] if isinstance(v, tuple) else v
        x = x.reshape(-1, x.shape[-1])
        skip = ("inputs", "value", "value0")
        name = ".".join(p for p in re.findall(r"\w+", path) if p not in skip)
        out[name] = {
            "kurtosis": float(fq.kurtosis(x)),
            "top": np.asarray(fq.top_k_channels(x, k)),
            "ftz": float(fq.flush_to_zero_rate(x, fq.NVIDIA_NVFP4)),
        }
    return out
