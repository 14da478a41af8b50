"""Mask-aware cached editing (InstGenIE): recompute only the masked tokens, reuse the
template's cached keys/values for the rest.

An edit regenerates the masked region of a template image under a new condition, RePaint
style: at every DDIM step the unmasked region is reset to the template's own noised
trajectory, so the unmasked tokens' inputs equal those of the template's pass. The cached path
stores, per step and per block, the template's keys/values (`build_template_cache`), and an
edit step computes only the masked tokens (`masked_eps`), attending to the cached keys/values
of unmasked tokens and the fresh ones of masked tokens. `full_edit_step` (recompute every
token) is the baseline and the quality reference.
"""

import hashlib
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._cache_attention import cache_attention, cache_attention_reference
from ._diffusion import Schedule, ddim_timesteps, ddim_update, q_sample
from ._models import DiT, attention

_COMPILED: dict = {}


class TemplateCache(NamedTuple):
    """Host-memory activations of one template: keys/values (steps, blocks, N, heads, head_dim),
    the template's noised trajectory xs (steps + 1, H, W; xs[-1] is the clean image)."""

    k: np.ndarray
    v: np.ndarray
    xs: np.ndarray
    label: int
    version: str

    @property
    def nbytes(self) -> int:
        return int(self.k.nbytes + self.v.nbytes + self.xs.nbytes)


def weights_version(params) -> str:
    """A digest of the weights: a cache built with other weights is never used."""
    h = hashlib.sha1()
    for leaf in jax.tree.leaves(params):
        h.update(np.asarray(leaf).tobytes())
    return h.hexdigest()[:16]


def dit_with_kv(dit: DiT, x, t, c):
    """Full DiT forward that also returns every block's keys and values (blocks first)."""
    b = x.shape[0]
    ids = jnp.broadcast_to(jnp.arange(dit.num_tokens), (b, dit.num_tokens))
    h = dit.embed_patches(dit.patchify(x), ids)
    cvec = dit.conditioning(t, c)
    ks, vs = [], []
    for block in dit.blocks:
        mods = block.modulation(cvec)
        q, k, v = block.attention_inputs(h, mods)
        ks.append(k)
        vs.append(v)
        h = block.finish(h, attention(q, k, v), mods)
    return dit.unpatchify(dit.head(h, cvec)), jnp.stack(ks), jnp.stack(vs)


def _template_pass(dit, encode, schedule, steps):
    key = ("template", id(dit), id(encode), id(schedule), steps)
    if key not in _COMPILED:
        ts = jnp.asarray(ddim_timesteps(schedule.alphas_cumprod.shape[0], steps))

        @jax.jit
        def run(image, noise, label):
            xs = jax.vmap(lambda t: q_sample(schedule, image[None], t[None], noise[None])[0])(ts)
            c = encode(label)

            def one(x, t):
                _, k, v = dit_with_kv(dit, x[None], t[None], c)
                return k[:, 0], v[:, 0]

            k, v = jax.lax.map(lambda a: one(*a), (xs, ts))
            return k, v, jnp.concatenate([xs, image[None]])

        _COMPILED[key] = ((dit, encode, schedule), run)
    return _COMPILED[key][1]


def build_template_cache(
    dit: DiT,
    encode: Callable,
    schedule: Schedule,
    image,
    label: int,
    *,
    steps: int,
    key: jax.Array,
    version: str = "",
) -> TemplateCache:
    """Noise the template along the DDIM grid and record every step's keys/values."""
    image = jnp.asarray(image, jnp.float32)
    if image.shape != (dit.image_size, dit.image_size):
        raise ValueError(f"image: expected {(dit.image_size,) * 2}, got {image.shape}")
    noise = jax.random.normal(key, image.shape)
    run = _template_pass(dit, encode, schedule, steps)
    k, v, xs = jax.device_get(run(image, noise, jnp.array([label])))
    return TemplateCache(np.asarray(k), np.asarray(v), np.asarray(xs), int(label), version)


def token_mask(dit: DiT, mask) -> np.ndarray:
    """Pixel mask (H, W) in {0, 1} -> token mask (N,) bool (a token is masked if any pixel is)."""
    m = np.asarray(mask)
    p, g = dit.patch, dit.grid
    return m.reshape(g, p, g, p).transpose(0, 2, 1, 3).reshape(g * g, p * p).max(-1) > 0


def _scatter_masked(x_tokens, xm, ids, valid):
    """Template tokens (B, N, P) with the masked tokens' rows replaced by xm (B, M, P)."""
    n = x_tokens.shape[1]
    where = jnp.where(valid > 0, ids, n)  # padding rows go out of bounds and are dropped
    rows = jnp.arange(x_tokens.shape[0])[:, None]
    return x_tokens.at[rows, where].set(xm, mode="drop")


def masked_eps(
    dit: DiT,
    xm,
    ids,
    valid,
    t,
    c,
    k_cache,
    v_cache,
    keep,
    *,
    impl: str = "ref",
    interpret: bool = True,
    full_blocks: int = 0,
    x_tokens=None,
):
    """Noise prediction for masked tokens only.

    xm (B, M, patch_dim) patches of the masked tokens at token ids `ids` (B, M), `valid`
    (B, M) marks real (non-padding) ones; k_cache/v_cache (B, blocks - full_blocks, N, heads,
    head_dim) the template's keys/values at this step for the cached blocks; keep (B, N) = 1
    for unmasked tokens.

    `full_blocks` > 0 (the per-request block plan): the first `full_blocks` blocks recompute
    every token, the unmasked ones from `x_tokens` (B, N, patch_dim), the template's noised
    patches at this step, so those blocks need no cache; the remaining blocks use the cache.
    `full_blocks == depth` is full recomputation.
    """
    depth = len(dit.blocks)
    if not 0 <= full_blocks <= depth:
        raise ValueError(f"full_blocks: expected 0..{depth}, got {full_blocks}")
    if k_cache.shape[1] != depth - full_blocks:
        raise ValueError(
            f"k_cache: expected {depth - full_blocks} cached blocks for full_blocks="
            f"{full_blocks}, got {k_cache.shape[1]}"
        )
    cvec = dit.conditioning(t, c)
    if full_blocks:
        if x_tokens is None:
            raise ValueError("x_tokens: required when full_blocks > 0")
        b, n = x_tokens.shape[:2]
        every = jnp.broadcast_to(jnp.arange(n), (b, n))
        h = dit.embed_patches(_scatter_masked(x_tokens, xm, ids, valid), every)
        for block in dit.blocks[:full_blocks]:
            mods = block.modulation(cvec)
            q, k, v = block.attention_inputs(h, mods)
            h = block.finish(h, attention(q, k, v), mods)
        h = jnp.take_along_axis(h, ids[..., None], axis=1)
    else:
        h = dit.embed_patches(xm, ids)
    for i, block in enumerate(dit.blocks[full_blocks:]):
        mods = block.modulation(cvec)
        q, k, v = block.attention_inputs(h, mods)
        if impl == "pallas":
            o = cache_attention(
                q, k_cache[:, i], v_cache[:, i], keep, k, v, valid, interpret=interpret
            )
        else:
            o = cache_attention_reference(q, k_cache[:, i], v_cache[:, i], keep, k, v, valid)
        h = block.finish(h, o, mods)
    return dit.head(h, cvec)


def masked_edit_step(
    dit,
    schedule,
    xm,
    ids,
    valid,
    t,
    t_prev,
    c,
    k_cache,
    v_cache,
    keep,
    x_tokens=None,
    *,
    impl: str = "ref",
    full_blocks: int = 0,
):
    """One DDIM step of the masked tokens (per-sample timesteps t -> t_prev)."""
    eps = masked_eps(
        dit,
        xm,
        ids,
        valid,
        t,
        c,
        k_cache,
        v_cache,
        keep,
        impl=impl,
        full_blocks=full_blocks,
        x_tokens=x_tokens,
    )
    return ddim_update(schedule, xm, eps, t, t_prev)


def block_plan(
    num_masked: int, num_tokens: int, depth: int, *, compute_per_token: float, load_per_token: float
) -> int:
    """How many leading blocks an edit with `num_masked` of `num_tokens` masked tokens should
    recompute in full (no cache) so that loading the other blocks' cache hides behind compute.

    Per step, block j costs `compute_per_token` x (N if full else M), and loading a cached
    block costs `load_per_token` x N while the pipeline overlaps loading with compute. The plan
    minimises max(compute, loading), ties to the fewest full blocks: a large mask caches every
    block; a small one, whose masked compute is too short to hide the loads, recomputes early
    blocks (whose time hides the later blocks' loads).
    """
    if not 0 <= num_masked <= num_tokens:
        raise ValueError(f"num_masked: expected 0..{num_tokens}, got {num_masked}")

    def step_time(j):
        compute = compute_per_token * (j * num_tokens + (depth - j) * num_masked)
        return max(compute, load_per_token * num_tokens * (depth - j))

    return min(range(depth + 1), key=lambda j: (step_time(j), j))


def full_edit_step(dit, schedule, x, t, t_prev, c, mask, x_template_next):
    """Baseline: recompute every token, then reset the unmasked pixels to the template."""
    eps = dit(x, t, c)
    x_new = ddim_update(schedule, x, eps, t, t_prev)
    return jnp.where(mask > 0, x_new, x_template_next)


def compiled_steps(dit, encode, schedule, impl: str = "ref"):
    """Jitted (encode, masked step, full step) shared by every caller over the same model, so
    each input shape compiles once. All request data are arguments, never closure constants."""
    key = (id(dit), id(encode), id(schedule), impl)
    if key not in _COMPILED:
        _COMPILED[key] = (
            (dit, encode, schedule),  # keep the objects alive while their id is a key
            jax.jit(lambda lab: encode(lab)),
            jax.jit(
                lambda *a, full_blocks=0: masked_edit_step(
                    dit, schedule, *a, impl=impl, full_blocks=full_blocks
                ),
                static_argnames="full_blocks",
            ),
            jax.jit(lambda *a: full_edit_step(dit, schedule, *a)),
        )
    return _COMPILED[key][1:]


def edit_noise(seed: int, shape) -> np.ndarray:
    return np.asarray(jax.random.normal(jax.random.fold_in(jax.random.key(1), seed), shape))


def edit_reference(
    dit, encode, schedule, cache: TemplateCache, mask, label: int, seed: int, *, steps: int
) -> np.ndarray:
    """Full-recomputation edit of one request (the quality reference), all steps."""
    ts = ddim_timesteps(schedule.alphas_cumprod.shape[0], steps)
    ts_prev = np.append(ts[1:], -1)
    m = jnp.asarray(mask, jnp.float32)[None]
    x = jnp.where(m > 0, edit_noise(seed, m.shape[1:])[None], cache.xs[0][None])
    enc, _, full = compiled_steps(dit, encode, schedule)
    c = enc(jnp.array([label]))
    for i in range(steps):
        x = full(x, jnp.array([ts[i]]), jnp.array([ts_prev[i]]), c, m, cache.xs[i + 1][None])
    return np.asarray(x[0])


def cached_edit(
    dit,
    encode,
    schedule,
    cache: TemplateCache,
    mask,
    label: int,
    seed: int,
    *,
    steps: int,
    impl: str = "ref",
    pad_to: int | None = None,
    full_blocks: int = 0,
) -> np.ndarray:
    """Cached (masked-token) edit of one request, all steps; `pad_to` pads the token axis;
    the first `full_blocks` blocks recompute every token (see `masked_eps`)."""
    tm = token_mask(dit, mask)
    ids = np.flatnonzero(tm)
    m = len(ids)
    size = pad_to or m
    if size < m:
        raise ValueError(f"pad_to: must be >= the {m} masked tokens, got {pad_to}")
    ids_p = np.concatenate([ids, np.zeros(size - m, int)])[None]
    valid = (np.arange(size) < m).astype(np.float32)[None]
    pm = np.asarray(mask, np.float32)
    x0 = np.where(pm > 0, edit_noise(seed, pm.shape), cache.xs[0])
    xm = np.asarray(dit.patchify(jnp.asarray(x0)[None]))[:, ids_p[0]]
    keep = (~tm).astype(np.float32)[None]
    ts = ddim_timesteps(schedule.alphas_cumprod.shape[0], steps)
    ts_prev = np.append(ts[1:], -1)
    enc, step, _ = compiled_steps(dit, encode, schedule, impl)
    c = enc(jnp.array([label]))
    templ = np.asarray(dit.patchify(jnp.asarray(cache.xs)))  # (steps + 1, N, P)
    for i in range(steps):
        xm = step(
            xm,
            ids_p,
            valid,
            jnp.array([ts[i]]),
            jnp.array([ts_prev[i]]),
            c,
            cache.k[i][None, full_blocks:],
            cache.v[i][None, full_blocks:],
            keep,
            templ[i][None],
            full_blocks=full_blocks,
        )
    patches = np.array(dit.patchify(jnp.asarray(cache.xs[-1])[None]))
    patches[0, ids] = np.asarray(xm)[0, :m]
    return np.asarray(dit.unpatchify(jnp.asarray(patches)))[0]
