"""Training losses: the diffusion regression loss and MoEDiff-SR's expert/gate terms.

Expert task losses follow the public MoEDiff-SR code: expert 0 an edge (Laplacian) loss,
expert 1 a gradient-difference loss, expert 2 an FFT-magnitude loss, each on that expert's own
x0 estimate. Gate supervision: per token, the cosine similarity s_i between expert i's x0
estimate and the true x0 becomes a target softmax(s / T) with T a median absolute deviation
(MAD); the gate is trained towards it by cross-entropy. T is the MAD of the similarities
*across experts* (|s_i - median_i s|, pooled over tokens): the MAD over all similarities
(`temperature="pooled"`) is dominated by how hard a token is, not by which expert wins it,
and gave a nearly uniform target. Two diversity terms: `load_balance`, a Switch-style penalty
k * sum_i mean(g_i)^2 - 1 on gate usage (zero when experts are used equally), and
`output_similarity`, the public code's log(1 + mean_i max_{j != i} cos(x0_i, x0_j) / k) on the
experts' outputs (here per token), which pushes the experts' estimates apart.
"""

import jax
import jax.numpy as jnp

from ._types import Array


def reduce_loss(diff: Array, kind: str = "l1") -> Array:
    if kind == "l1":
        return jnp.abs(diff).mean()
    if kind == "l2":
        return (diff**2).mean()
    raise ValueError(f"kind: expected 'l1' or 'l2', got {kind!r}")


def laplacian(x: Array) -> Array:
    """5-point Laplacian of (b, h, w) images with edge padding."""
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    return p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4 * x


def edge_loss(x: Array, ref: Array) -> Array:
    return jnp.abs(laplacian(x) - laplacian(ref)).mean()


def gradient_difference_loss(x: Array, ref: Array) -> Array:
    """| |dx x| - |dx ref| | + | |dy x| - |dy ref| | (Mathieu et al.)."""
    gx = jnp.abs(jnp.abs(jnp.diff(x, axis=1)) - jnp.abs(jnp.diff(ref, axis=1))).mean()
    gy = jnp.abs(jnp.abs(jnp.diff(x, axis=2)) - jnp.abs(jnp.diff(ref, axis=2))).mean()
    return gx + gy


def fft_magnitude_loss(x: Array, ref: Array) -> Array:
    return (
        jnp.abs(jnp.abs(jnp.fft.rfft2(x)) - jnp.abs(jnp.fft.rfft2(ref))).mean() / x[0].size ** 0.5
    )


TASK_LOSSES = (edge_loss, gradient_difference_loss, fft_magnitude_loss)


def token_cosine(x: Array, ref: Array, patch: int) -> Array:
    """Cosine similarity of (b, h, w) images per p x p token -> (b, h/p, w/p)."""
    b, h, w = x.shape

    def tok(a):
        return (
            a.reshape(b, h // patch, patch, w // patch, patch)
            .transpose(0, 1, 3, 2, 4)
            .reshape(b, h // patch, w // patch, patch * patch)
        )

    tx, tr = tok(x), tok(ref)
    num = (tx * tr).sum(-1)
    return num / (jnp.linalg.norm(tx, axis=-1) * jnp.linalg.norm(tr, axis=-1) + 1e-6)


TEMPERATURES = ("experts", "pooled")


def token_fractions(masks: Array, patch: int) -> Array:
    """Region masks (b, h, w, k) -> the fraction of each p x p token inside each region
    (b, h/p, w/p, k)."""
    b, h, w, k = masks.shape
    return masks.reshape(b, h // patch, patch, w // patch, patch, k).mean((2, 4))


def gate_targets(
    expert_x0: Array,
    x0: Array,
    patch: int,
    *,
    temperature: str = "experts",
    regions: Array | None = None,
    region_bonus: float = 0.0,
) -> Array:
    """softmax(cos / T) per token, T a median absolute deviation (stop-gradient).

    `temperature="experts"`: T = median over tokens and experts of |s_i - median_i s| (the
    spread between experts); `"pooled"`: T = MAD of all similarities of the batch.
    `regions` (b, h, w, k) with `region_bonus` = beta > 0: region-informed supervision, the
    target becomes softmax(s / T + beta f) with f_i the token's fraction of region i, i.e.
    expert i gets a bonus of beta MAD units where the token lies in region i (tokens outside
    every region keep the similarity target; beta = 0 is the paper's target).
    """
    if temperature not in TEMPERATURES:
        raise ValueError(f"temperature: expected one of {TEMPERATURES}, got {temperature!r}")
    if region_bonus < 0:
        raise ValueError(f"region_bonus: expected >= 0, got {region_bonus}")
    sims = jnp.stack(
        [token_cosine(expert_x0[..., i], x0, patch) for i in range(expert_x0.shape[-1])], axis=-1
    )
    if temperature == "pooled":
        dev = jnp.abs(sims - jnp.median(sims))
    else:
        dev = jnp.abs(sims - jnp.median(sims, axis=-1, keepdims=True))
    temp = jnp.maximum(jnp.median(dev), 1e-3)
    logits = sims / temp
    if region_bonus:
        if regions is None or regions.shape[-1] != sims.shape[-1]:
            raise ValueError(
                f"regions: region_bonus needs {sims.shape[-1]} region masks, got "
                f"{None if regions is None else regions.shape}"
            )
        logits = logits + region_bonus * token_fractions(regions, patch)
    return jax.lax.stop_gradient(jax.nn.softmax(logits, axis=-1))


def gate_cross_entropy(gate: Array, target: Array) -> Array:
    return -(target * jnp.log(gate + 1e-8)).sum(-1).mean()


def load_balance(gate: Array) -> Array:
    """k * sum_i (mean gate_i)^2 - 1 >= 0, zero iff usage is uniform."""
    k = gate.shape[-1]
    usage = gate.reshape(-1, k).mean(0)
    return k * (usage**2).sum() - 1.0


def output_similarity(expert_x0: Array, patch: int) -> Array:
    """The public code's diversity term: log(1 + mean_i max_{j != i} cos(x0_i, x0_j) / k).

    cos(x0_i, x0_j) is the token cosine similarity (`token_cosine`) averaged over tokens;
    `expert_x0` is (b, h, w, k). Lower = experts that disagree more.
    """
    k = expert_x0.shape[-1]
    if k < 2:
        return jnp.zeros(())
    sims = [
        [token_cosine(expert_x0[..., i], expert_x0[..., j], patch).mean() for j in range(k)]
        for i in range(k)
    ]
    others = [jnp.stack([sims[i][j] for j in range(k) if j != i]).max() for i in range(k)]
    closest = jnp.stack(others)
    return jnp.log1p(closest.mean() / k)


DIVERSITY = ("balance", "similarity")
