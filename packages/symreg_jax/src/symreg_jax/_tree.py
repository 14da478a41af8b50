"""Tree structure of fixed-length prefix token arrays: subtree spans, random trees, splicing.

Every function works on one expression (``tokens: Int[Array, " length"]``); use `jax.vmap` for a
population. All outputs are valid prefix expressions by construction: generation tracks the
number of open argument slots, and edits only ever replace a whole subtree by a whole subtree
or a gene by a gene of the same arity.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ._primitives import PrimitiveSet


def subtree_end(tokens: Int[Array, " length"], pset: PrimitiveSet) -> Int[Array, " length"]:
    """Exclusive end index of the subtree rooted at each position (``i + 1`` on padding).

    With ``d = 1 - arity`` and ``S`` its running sum, the subtree at ``i`` ends at the first
    ``j >= i`` with ``S[j] = S[i] - d[i] + 1`` (one more completed value than before ``i``).
    """
    length = tokens.shape[-1]
    ar = pset.arity_table()[tokens]
    d = 1 - ar
    s = jnp.cumsum(d)
    target = s - d + 1
    idx = jnp.arange(length)
    hit = (s[None, :] == target[:, None]) & (idx[None, :] >= idx[:, None])
    return jnp.argmax(hit, axis=1).astype(jnp.int32) + 1


def expression_length(tokens: Int[Array, "... length"], pset: PrimitiveSet) -> Int[Array, "..."]:
    """Number of non-padding tokens."""
    return jnp.sum(tokens != pset.pad, axis=-1).astype(jnp.int32)


def is_valid_reference(tokens: np.ndarray, pset: PrimitiveSet) -> bool:
    """Plain-Python check: one complete prefix expression followed only by padding."""
    ar = pset.arities()
    need, i = 1, 0
    toks = [int(t) for t in tokens]
    while need > 0:
        if i >= len(toks) or toks[i] == pset.pad or not 0 <= toks[i] < pset.vocab_size:
            return False
        need += ar[toks[i]] - 1
        i += 1
    return all(t == pset.pad for t in toks[i:])


def tree_noise_width(pset: PrimitiveSet) -> int:
    """Uniform numbers one random tree consumes per position."""
    return 3 + len(pset.operators)


def random_tree_from_noise(
    noise: Float[Array, "length width"],
    pset: PrimitiveSet,
    *,
    max_depth: Int[Array, ""] | int,
    full: Bool[Array, ""] | bool = False,
    max_nodes: Int[Array, ""] | int | None = None,
    terminal_prob: float = 0.3,
    const_range: float = 2.0,
) -> tuple[Int[Array, " length"], Float[Array, " length"]]:
    """`random_tree` driven by pre-drawn uniforms (``tree_noise_width(pset)`` per position),
    so a whole population draws its randomness in one call."""
    length = pset.max_len
    max_nodes = length if max_nodes is None else max_nodes
    ar = pset.arity_table()
    n_ops = len(pset.operators)
    terms = jnp.asarray(pset.terminal_ids())
    u_term = noise[:, 0]
    term_pick = jnp.minimum((noise[:, 1] * terms.shape[0]).astype(jnp.int32), terms.shape[0] - 1)
    const_vals = (2.0 * noise[:, 2] - 1.0) * const_range
    op_gumbel = -jnp.log(-jnp.log(jnp.clip(noise[:, 3:], 1e-7, 1 - 1e-7)))
    op_ar = ar[pset.op_offset : pset.op_offset + n_ops]

    def step(carry, j):
        stack, sp = carry
        active = sp > 0
        depth = stack[jnp.maximum(sp - 1, 0)]
        sp_after = jnp.where(active, sp - 1, 0)
        room = max_nodes - j - 1
        fits = (sp_after + op_ar <= room) & (depth < max_depth)
        want_term = jnp.where(full, depth >= max_depth, u_term[j] < terminal_prob)
        want_term = want_term | (depth >= max_depth) | ~jnp.any(fits)
        op_choice = jnp.argmax(jnp.where(fits, op_gumbel[j], -jnp.inf))
        tok = jnp.where(want_term, terms[term_pick[j]], pset.op_offset + op_choice)
        tok = jnp.where(active, tok, pset.pad).astype(jnp.int32)
        a = ar[tok]
        # Push `a` children at depth + 1.
        slots = jnp.arange(length)
        push = (slots >= sp_after) & (slots < sp_after + a)
        stack = jnp.where(push, depth + 1, stack)
        return (stack, sp_after + a), tok

    stack0 = jnp.zeros((length,), jnp.int32)
    (_, _), tokens = jax.lax.scan(step, (stack0, jnp.int32(1)), jnp.arange(length))
    consts = jnp.where(tokens == pset.const_token, const_vals, 0.0)
    return tokens, consts


def random_tree(
    key: Array,
    pset: PrimitiveSet,
    *,
    max_depth: Int[Array, ""] | int,
    full: Bool[Array, ""] | bool = False,
    max_nodes: Int[Array, ""] | int | None = None,
    terminal_prob: float = 0.3,
    const_range: float = 2.0,
) -> tuple[Int[Array, " length"], Float[Array, " length"]]:
    """One random expression ("full" or "grow" method), padded to ``pset.max_len``.

    A node at depth ``max_depth`` is a terminal; "full" picks operators above it, "grow" picks a
    terminal with probability `terminal_prob`. An operator is only chosen if the open slots
    still fit into `max_nodes`, so the result is always a complete expression. Constants are
    uniform in ``[-const_range, const_range]``.
    """
    noise = jax.random.uniform(key, (pset.max_len, tree_noise_width(pset)))
    return random_tree_from_noise(
        noise,
        pset,
        max_depth=max_depth,
        full=full,
        max_nodes=max_nodes,
        terminal_prob=terminal_prob,
        const_range=const_range,
    )


def random_trees(
    key: Array,
    pset: PrimitiveSet,
    n: int,
    *,
    max_depth: Int[Array, " n"] | int,
    full: Bool[Array, " n"] | bool = False,
    max_nodes: int | None = None,
) -> tuple[Int[Array, "n length"], Float[Array, "n length"]]:
    """`n` random trees from one random draw (per-tree `max_depth` and `full` allowed)."""
    noise = jax.random.uniform(key, (n, pset.max_len, tree_noise_width(pset)))
    depth = jnp.broadcast_to(jnp.asarray(max_depth), (n,))
    full = jnp.broadcast_to(jnp.asarray(full), (n,))
    return jax.vmap(
        lambda z, d, f: random_tree_from_noise(z, pset, max_depth=d, full=f, max_nodes=max_nodes)
    )(noise, depth, full)


def splice(
    tokens: Int[Array, " length"],
    consts: Float[Array, " length"],
    point: Int[Array, ""],
    donor_tokens: Int[Array, " length"],
    donor_consts: Float[Array, " length"],
    donor_point: Int[Array, ""],
    pset: PrimitiveSet,
) -> tuple[Int[Array, " length"], Float[Array, " length"], Bool[Array, ""]]:
    """Replace the subtree at `point` by the donor's subtree at `donor_point`.

    Returns ``(tokens, consts, ok)``; when the child would exceed ``max_len`` the parent is
    returned unchanged with ``ok = False``.
    """
    length = tokens.shape[-1]
    end = subtree_end(tokens, pset)[point]
    dend = subtree_end(donor_tokens, pset)[donor_point]
    size, dsize = end - point, dend - donor_point
    n = expression_length(tokens, pset)
    new_n = n - size + dsize
    ok = new_n <= length
    j = jnp.arange(length)
    from_donor = (j >= point) & (j < point + dsize)
    src_parent = jnp.where(j < point, j, j - dsize + size)
    src_donor = jnp.clip(donor_point + j - point, 0, length - 1)
    in_range = j < new_n
    src_parent_c = jnp.clip(src_parent, 0, length - 1)
    new_t = jnp.where(from_donor, donor_tokens[src_donor], tokens[src_parent_c])
    new_c = jnp.where(from_donor, donor_consts[src_donor], consts[src_parent_c])
    new_t = jnp.where(in_range, new_t, pset.pad)
    new_c = jnp.where(in_range, new_c, 0.0)
    return jnp.where(ok, new_t, tokens), jnp.where(ok, new_c, consts), ok


def node_at(
    u: Float[Array, "*k"], tokens: Int[Array, " length"], pset: PrimitiveSet
) -> Int[Array, "*k"]:
    """The non-padding position each uniform number ``u in [0, 1)`` selects (uniform over
    nodes); ``u`` may hold several draws (K candidate positions)."""
    n = jnp.maximum(expression_length(tokens, pset), 1)
    return jnp.minimum((u * n).astype(jnp.int32), n - 1)


def same_class_mask(
    tokens: Int[Array, " length"], point: Int[Array, ""], pset: PrimitiveSet
) -> Bool[Array, " vocab"]:
    """Which token ids may replace the gene at `point` (same arity class, not itself, and the
    constant token only if constants are enabled)."""
    cls = jnp.asarray(pset.token_classes())
    tok = tokens[point]
    allowed = cls == cls[tok]
    allowed = allowed & (jnp.arange(pset.vocab_size) != tok)
    if not pset.use_constants:
        allowed = allowed & (jnp.arange(pset.vocab_size) != pset.const_token)
    return allowed


def replace_gene(
    tokens: Int[Array, " length"],
    consts: Float[Array, " length"],
    point: Int[Array, ""],
    new_token: Int[Array, ""],
    new_const: Float[Array, ""],
) -> tuple[Int[Array, " length"], Float[Array, " length"]]:
    """Set one gene (callers guarantee `new_token` has the arity of the old one)."""
    return tokens.at[point].set(new_token), consts.at[point].set(new_const)
