"""The GP engine as pure functions: one generation is one jitted call, a run a `while_loop`.

`make_engine(pset, config, mutation_graphdef=None, crossover_graphdef=None)` returns an
`Engine(init, step, run)`. With graphdefs given (GESR), point mutations sample the new gene from
the masked-gene model and crossover points from the crossover model, whose NNX states are
passed as `guide=(mutation_state, crossover_state)`; without them (plain GP) both are uniform.
`guide=(mutation_state, crossover_state, enabled)` with a boolean scalar `enabled` switches the
models on or off at run time (`lax.cond`): switched off, a step is exactly the plain-GP step and
the models are not run, so one compiled engine serves both methods.
Everything else (selection, subtree mutation, elitism, parsimony, constant optimisation) is
shared, so the two differ only in where the edits come from.
"""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jaxtyping import Array, Float, Int

from . import _tree
from ._bert import masked_point_logits, node_logits
from ._buffer import EditBuffer, empty_buffer, record_crossovers, record_mutations
from ._evaluate import evaluate_population, normalized_mse
from ._keys import loop_key
from ._primitives import PrimitiveSet


@dataclasses.dataclass(frozen=True)
class GPConfig:
    """Hyperparameters (static; they live in the closure, never in the state)."""

    population_size: int = 256
    tournament_size: int = 5
    p_crossover: float = 0.5
    p_subtree_mutation: float = 0.2
    p_point_mutation: float = 0.2  # the rest is reproduction
    elitism: int = 2
    parsimony: float = 1e-3
    init_min_depth: int = 1
    init_max_depth: int = 4
    mutation_max_depth: int = 3
    mutation_max_nodes: int = 15
    const_every: int = 5
    const_top_k: int = 8
    const_steps: int = 20
    const_lr: float = 0.1
    target_nmse: float = 1e-6
    max_evaluations: int = 10**9
    buffer_capacity: int = 2048
    temperature: float = 1.0
    # Which edits go to the buffer: "improving" (child fitter than its parent) or "all"
    # (every edit with a finite child fitness; train on them weighted by `edit_weights`).
    record: str = "improving"
    # Fraction of the guided slots whose edit comes from the models; the rest stay uniform.
    guide_rate: float = 1.0
    # Model pre-screen: with `screen = K > 1` a guided slot draws K uniform candidate edits
    # (crossover: K point pairs; point mutation: K (position, gene) pairs), the models score
    # them and only the best-scored child is built and evaluated. `guide_kind` says how the
    # models' outputs are read: "policy" (trained on improving edits with `mutation_loss` /
    # `crossover_loss`: likelihood ratio against uniform) or "value" (trained on all edits
    # with `mutation_value_loss` / `crossover_value_loss`: log-odds of improving).
    # `screen_mutation=False` leaves point mutations uniform when screening.
    screen: int = 1
    guide_kind: str = "policy"
    screen_mutation: bool = True

    def __post_init__(self) -> None:
        if self.population_size < 4:
            raise ValueError(f"population_size: expected >= 4, got {self.population_size}")
        if not 1 <= self.tournament_size <= self.population_size:
            raise ValueError(
                f"tournament_size: expected 1..population_size, got {self.tournament_size}"
            )
        probs = (self.p_crossover, self.p_subtree_mutation, self.p_point_mutation)
        if min(probs) < 0 or sum(probs) > 1 + 1e-9:
            raise ValueError(f"p_*: expected non-negative probabilities summing <= 1, got {probs}")
        if not 0 <= self.elitism < self.population_size:
            raise ValueError(f"elitism: expected 0..population_size-1, got {self.elitism}")
        if not 0 <= self.const_top_k <= self.population_size:
            raise ValueError(f"const_top_k: expected 0..population_size, got {self.const_top_k}")
        if self.record not in ("improving", "all"):
            raise ValueError(f"record: expected 'improving' or 'all', got {self.record!r}")
        if self.screen < 1:
            raise ValueError(f"screen: expected >= 1 candidates per edit, got {self.screen}")
        if self.guide_kind not in ("policy", "value"):
            raise ValueError(f"guide_kind: expected 'policy' or 'value', got {self.guide_kind!r}")
        if self.guide_kind == "value" and self.screen == 1:
            raise ValueError("guide_kind: 'value' models only rank candidates; set screen >= 2")
        if not 0.0 <= self.guide_rate <= 1.0:
            raise ValueError(f"guide_rate: expected a fraction in [0, 1], got {self.guide_rate}")
        if self.init_min_depth < 0 or self.init_max_depth < self.init_min_depth:
            raise ValueError(
                f"init_min_depth/init_max_depth: expected 0 <= min <= max, got "
                f"{self.init_min_depth}/{self.init_max_depth}"
            )


class GPState(NamedTuple):
    tokens: Int[Array, "pop length"]
    consts: Float[Array, "pop length"]
    nmse: Float[Array, " pop"]
    fitness: Float[Array, " pop"]
    best_tokens: Int[Array, " length"]
    best_consts: Float[Array, " length"]
    best_nmse: Float[Array, ""]
    generation: Int[Array, ""]
    evaluations: Int[Array, ""]
    solved_at: Int[Array, ""]  # evaluations when best_nmse first reached the target, or -1
    buffer: EditBuffer
    key: Array


class Engine(NamedTuple):
    init: Any
    step: Any
    run: Any


def _gumbel(u):
    return -jnp.log(-jnp.log(jnp.clip(u, 1e-7, 1 - 1e-7)))


def _tournament(u, fitness, size):
    """Tournament winners from uniforms ``u: (n, size)``."""
    idx = jnp.minimum((u * fitness.shape[0]).astype(jnp.int32), fitness.shape[0] - 1)
    winner = jnp.argmin(fitness[idx], axis=1)
    return jnp.take_along_axis(idx, winner[:, None], axis=1)[:, 0]


def _score(tokens, consts, inputs, targets, pset, parsimony):
    nmse = normalized_mse(evaluate_population(tokens, consts, inputs, pset), targets)
    length = _tree.expression_length(tokens, pset)
    fitness = nmse + parsimony * length
    return nmse, jnp.where(jnp.isfinite(fitness), fitness, jnp.inf)


def _update_best(state: GPState, config: GPConfig) -> GPState:
    i = jnp.argmin(state.nmse)
    better = state.nmse[i] < state.best_nmse
    best_nmse = jnp.where(better, state.nmse[i], state.best_nmse)
    solved_now = (best_nmse <= config.target_nmse) & (state.solved_at < 0)
    return state._replace(
        best_tokens=jnp.where(better, state.tokens[i], state.best_tokens),
        best_consts=jnp.where(better, state.consts[i], state.best_consts),
        best_nmse=best_nmse,
        solved_at=jnp.where(solved_now, state.evaluations, state.solved_at),
    )


def make_engine(
    pset: PrimitiveSet,
    config: GPConfig = GPConfig(),
    mutation_graphdef: nnx.GraphDef | None = None,
    crossover_graphdef: nnx.GraphDef | None = None,
) -> Engine:
    """Build `init(inputs, targets, *, key)`, `step(state, inputs, targets, guide)` and
    `run(state, inputs, targets, guide, max_generations)` (all jittable, pure)."""
    n, length = config.population_size, pset.max_len

    def init(inputs, targets, *, key: Array) -> GPState:
        k_tree, k_state = jax.random.split(loop_key(key))
        ramp = config.init_max_depth - config.init_min_depth + 1
        depths = config.init_min_depth + jnp.arange(n) % ramp
        full = (jnp.arange(n) // ramp) % 2 == 0
        tokens, consts = _tree.random_trees(k_tree, pset, n, max_depth=depths, full=full)
        nmse, fitness = _score(tokens, consts, inputs, targets, pset, config.parsimony)
        state = GPState(
            tokens,
            consts,
            nmse,
            fitness,
            tokens[0],
            consts[0],
            jnp.float32(jnp.inf),
            jnp.int32(0),
            jnp.int32(n),
            jnp.int32(-1),
            empty_buffer(config.buffer_capacity, length),
            k_state,
        )
        return _update_best(state, config)

    def optimise_constants(state: GPState, inputs, targets) -> GPState:
        k = config.const_top_k
        top = jnp.argsort(state.fitness)[:k]
        toks, c0 = state.tokens[top], state.consts[top]
        is_c = (toks == pset.const_token).astype(c0.dtype)
        opt = optax.adam(config.const_lr)

        def loss(c):
            err = evaluate_population(toks, c, inputs, pset) - targets[None]
            per = jnp.mean(err**2, axis=1)
            return jnp.sum(jnp.where(jnp.isfinite(per), per, 0.0))

        def body(carry, _):
            c, s = carry
            g = jax.grad(loss)(c)
            g = jnp.where(jnp.isfinite(g), g, 0.0) * is_c
            upd, s = opt.update(g, s, c)
            return (optax.apply_updates(c, upd), s), None

        (c1, _), _ = jax.lax.scan(body, (c0, opt.init(c0)), None, length=config.const_steps)
        nmse1, fit1 = _score(toks, c1, inputs, targets, pset, config.parsimony)
        keep = fit1 < state.fitness[top]
        return state._replace(
            consts=state.consts.at[top].set(jnp.where(keep[:, None], c1, c0)),
            nmse=state.nmse.at[top].set(jnp.where(keep, nmse1, state.nmse[top])),
            fitness=state.fitness.at[top].set(jnp.where(keep, fit1, state.fitness[top])),
            evaluations=state.evaluations + k * (config.const_steps + 1),
        )

    node_at = jax.vmap(_tree.node_at, in_axes=(0, 0, None))
    splice = jax.vmap(_tree.splice, in_axes=(0, 0, 0, 0, 0, 0, None))
    t_size = config.tournament_size
    # Fixed slots per edit kind (static shapes: each model runs only on its own slots).
    n_xo = int(round(config.p_crossover * n))
    n_sm = int(round(config.p_subtree_mutation * n))
    n_pm = min(int(round(config.p_point_mutation * n)), n - n_xo - n_sm)
    cols = 2 * t_size + 5 + 2 * length + pset.vocab_size

    def _switch(graphdef, guide, guided_fn, uniform_fn):
        """The guided edit, or the uniform one where the model is absent or switched off."""
        if guide is None or graphdef is None:
            return uniform_fn()
        if len(guide) == 2:
            return guided_fn()
        return jax.lax.cond(guide[2], guided_fn, uniform_fn)

    def _crossover_points(u_a, u_b, g_a, g_b, u_mix, parents, donors, guide, k_screen):
        def uniform():
            return node_at(u_a, parents, pset), node_at(u_b, donors, pset)

        def guided():
            sa, sb = nnx.merge(crossover_graphdef, guide[1])(parents, donors)
            la = node_logits(sa, parents, pset.pad)
            lb = node_logits(sb, donors, pset.pad)
            if config.screen > 1:
                # K uniform candidate point pairs, the best-scored one is built.
                k1, k2 = jax.random.split(k_screen)
                shape = (parents.shape[0], config.screen)
                ca = node_at(jax.random.uniform(k1, shape), parents, pset)
                cb = node_at(jax.random.uniform(k2, shape), donors, pset)
                if config.guide_kind == "policy":
                    la, lb = jax.nn.log_softmax(la, axis=1), jax.nn.log_softmax(lb, axis=1)
                sc = jnp.take_along_axis(la, ca, axis=1) + jnp.take_along_axis(lb, cb, axis=1)
                best = jnp.argmax(sc, axis=1)[:, None]
                pa = jnp.take_along_axis(ca, best, axis=1)[:, 0]
                pb = jnp.take_along_axis(cb, best, axis=1)[:, 0]
            else:
                t = config.temperature
                pa = jnp.argmax(la / t + g_a, axis=1)
                pb = jnp.argmax(lb / t + g_b, axis=1)
            if config.guide_rate < 1.0:
                ua, ub = uniform()
                use = u_mix < config.guide_rate
                pa, pb = jnp.where(use, pa, ua), jnp.where(use, pb, ub)
            return pa.astype(jnp.int32), pb.astype(jnp.int32)

        return _switch(crossover_graphdef, guide, guided, uniform)

    same_class = jax.vmap(_tree.same_class_mask, in_axes=(0, 0, None))

    def _point_edit(u_p, g, u_mix, parents, guide, k_screen):
        """(positions, new genes) of the point mutations of `parents`."""
        rows = jnp.arange(parents.shape[0])

        def uniform():
            points = node_at(u_p, parents, pset)
            allowed = same_class(parents, points, pset)
            return points, jnp.argmax(jnp.where(allowed, 0.0, -jnp.inf) + g, axis=1)

        def sampled():
            points = node_at(u_p, parents, pset)
            allowed = same_class(parents, points, pset)
            masked = parents.at[rows, points].set(pset.mask_token)
            logits = nnx.merge(mutation_graphdef, guide[0])(masked)
            logits = masked_point_logits(logits, points, allowed) / config.temperature
            if config.guide_rate < 1.0:
                uni = jnp.where(allowed, 0.0, -jnp.inf)
                logits = jnp.where((u_mix < config.guide_rate)[:, None], logits, uni)
            return points, jnp.argmax(logits + g, axis=1)

        def screened():
            m, kk = parents.shape[0], config.screen
            k1, k2 = jax.random.split(k_screen)
            cand_p = node_at(jax.random.uniform(k1, (m, kk)), parents, pset)
            flat_parents = jnp.repeat(parents, kk, axis=0)
            allowed = same_class(flat_parents, cand_p.reshape(-1), pset)  # (m*K, vocab)
            gum = _gumbel(jax.random.uniform(k2, allowed.shape))
            cand_t = jnp.argmax(jnp.where(allowed, gum, -jnp.inf), axis=1)
            masked = flat_parents.at[jnp.arange(m * kk), cand_p.reshape(-1)].set(pset.mask_token)
            logits = nnx.merge(mutation_graphdef, guide[0])(masked)
            at = masked_point_logits(logits, cand_p.reshape(-1), allowed)
            if config.guide_kind == "policy":
                n_ok = jnp.maximum(jnp.sum(allowed, axis=1), 1).astype(at.dtype)
                at = jax.nn.log_softmax(at, axis=1) + jnp.log(n_ok)[:, None]
            sc = jnp.take_along_axis(at, cand_t[:, None], axis=1)[:, 0]
            sc = jnp.where(jnp.any(allowed, axis=1), sc, -1e30).reshape(m, kk)
            best = jnp.argmax(sc, axis=1)[:, None]
            points = jnp.take_along_axis(cand_p, best, axis=1)[:, 0]
            new = jnp.take_along_axis(cand_t.reshape(m, kk), best, axis=1)[:, 0]
            if config.guide_rate < 1.0:
                up, ut = uniform()
                use = u_mix < config.guide_rate
                points, new = jnp.where(use, points, up), jnp.where(use, new, ut)
            return points, new

        if config.screen > 1 and not config.screen_mutation:
            points, new = uniform()
        else:
            guided = screened if config.screen > 1 else sampled
            points, new = _switch(mutation_graphdef, guide, guided, uniform)
        points, new = points.astype(jnp.int32), new.astype(jnp.int32)
        # A gene with no alternative of its arity stays as it is.
        ok = jnp.any(same_class(parents, points, pset), axis=1)
        new = jnp.where(ok, new, parents[rows, points])
        return points, new, parents.at[rows, points].set(pset.mask_token)

    def step(state: GPState, inputs, targets, guide=None) -> GPState:
        k_gen = jax.random.fold_in(state.key, state.generation)
        k_u, k_tree = jax.random.split(k_gen)
        k_sx, k_sm = jax.random.split(jax.random.fold_in(k_gen, 1))  # screening only
        u = jax.random.uniform(k_u, (n, cols))
        u_t1, u_t2 = u[:, :t_size], u[:, t_size : 2 * t_size]
        u_xa, u_xb, u_sp, u_pp, u_c = (u[:, 2 * t_size + j] for j in range(5))
        g = _gumbel(u[:, 2 * t_size + 5 :])
        g_a, g_b, g_tok = g[:, :length], g[:, length : 2 * length], g[:, 2 * length :]
        i1 = _tournament(u_t1, state.fitness, t_size)
        i2 = _tournament(u_t2, state.fitness, t_size)
        pt, pc = state.tokens[i1], state.consts[i1]
        dt, dc = state.tokens[i2], state.consts[i2]
        a, b, c = n_xo, n_xo + n_sm, n_xo + n_sm + n_pm
        # Crossover on slots [0, a).
        # (`u_sp` is only used by subtree-mutation slots: elsewhere it draws the mixing.)
        xa, xb = _crossover_points(
            u_xa[:a], u_xb[:a], g_a[:a], g_b[:a], u_sp[:a], pt[:a], dt[:a], guide, k_sx
        )
        xo_t, xo_c, _ = splice(pt[:a], pc[:a], xa, dt[:a], dc[:a], xb, pset)
        # Subtree mutation on [a, b): splice in a random "grow" tree.
        rt, rc = _tree.random_trees(
            k_tree,
            pset,
            n_sm,
            max_depth=config.mutation_max_depth,
            full=False,
            max_nodes=config.mutation_max_nodes,
        )
        sp = node_at(u_sp[a:b], pt[a:b], pset)
        sm_t, sm_c, _ = splice(pt[a:b], pc[a:b], sp, rt, rc, jnp.zeros((n_sm,), jnp.int32), pset)
        # Point (masked-gene) mutation on [b, c).
        pp, new_tok, masked = _point_edit(
            u_pp[b:c], g_tok[b:c, : pset.vocab_size], u_sp[b:c], pt[b:c], guide, k_sm
        )
        new_const = jnp.where(new_tok == pset.const_token, 4.0 * u_c[b:c] - 2.0, 0.0)
        pm_t, pm_c = jax.vmap(_tree.replace_gene)(pt[b:c], pc[b:c], pp, new_tok, new_const)
        # Reproduction on [c, n).
        tokens = jnp.concatenate([xo_t, sm_t, pm_t, pt[c:]], axis=0)
        consts = jnp.concatenate([xo_c, sm_c, pm_c, pc[c:]], axis=0)
        nmse, fitness = _score(tokens, consts, inputs, targets, pset, config.parsimony)
        # Gain > 0 iff the child is fitter; a finite child of a non-finite parent gets 1e30.
        gain = jnp.minimum(state.fitness[i1] - fitness, 1e30)
        if config.record == "all":
            keep = jnp.isfinite(fitness)
        else:
            keep = fitness < state.fitness[i1]
        gain = jnp.where(keep, gain, 0.0)
        buf = record_mutations(state.buffer, masked, pp, new_tok, gain[b:c], keep[b:c])
        buf = record_crossovers(buf, pt[:a], dt[:a], xa, xb, gain[:a], keep[:a])
        # Elitism: the best `elitism` parents replace the last children.
        e = config.elitism
        if e:
            elite = jnp.argsort(state.fitness)[:e]
            tokens = tokens.at[n - e :].set(state.tokens[elite])
            consts = consts.at[n - e :].set(state.consts[elite])
            nmse = nmse.at[n - e :].set(state.nmse[elite])
            fitness = fitness.at[n - e :].set(state.fitness[elite])
        # Reproduced and elite individuals are copies: only edited children cost evaluations.
        new = state._replace(
            tokens=tokens,
            consts=consts,
            nmse=nmse,
            fitness=fitness,
            generation=state.generation + 1,
            evaluations=state.evaluations + c,
            buffer=buf,
        )
        if config.const_top_k and config.const_steps and pset.use_constants:
            new = jax.lax.cond(
                new.generation % config.const_every == 0,
                lambda s: optimise_constants(s, inputs, targets),
                lambda s: s,
                new,
            )
        return _update_best(new, config)

    def run(state: GPState, inputs, targets, guide=None, max_generations=100) -> GPState:
        """Generations until `max_generations` more have run, the target error is reached or
        the evaluation budget is spent (a compiled `while_loop`)."""
        stop = state.generation + max_generations

        def cond(s):
            return (
                (s.generation < stop)
                & (s.best_nmse > config.target_nmse)
                & (s.evaluations < config.max_evaluations)
            )

        return jax.lax.while_loop(cond, lambda s: step(s, inputs, targets, guide), state)

    return Engine(init, step, run)
