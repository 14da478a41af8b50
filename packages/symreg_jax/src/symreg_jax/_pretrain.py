"""Offline pre-training of the two guides, and the guide pairs shipped with the package.

`pretrain_guides` runs plain GP (seeds vmapped, one compiled engine) on random target
expressions, records the point mutations and crossovers it makes with their fitness gains
(`pretrain_edits`), keeps the edits a variant trains on (`select_edits`) and fits both BERTs
on them (`fit_guides`). It sees only input points `x` (the targets are random expressions,
never a problem's), so one pair serves every problem with the same primitive set: save it
with `save_model`, restore it with `load_model` and pass it to the engine or to
`GESRRegressor`.

`shipped_guides(pset)` loads the pairs bundled under ``symreg_jax/guides/`` (made by
``packages/symreg_jax/benchmarks/make_guides.py`` with `pretrain_guides`), where one exists for
``pset`` (the default operators, ``max_len=32``, 1 to 4 variables), without network access.
"""

import functools
import json
import pathlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from ._bert import CrossoverModel, MutationModel
from ._buffer import merge_buffers
from ._evaluate import evaluate_reference
from ._gp import GPConfig, make_engine
from ._primitives import PrimitiveSet
from ._train import (
    crossover_data,
    crossover_loss,
    crossover_value_loss,
    load_model,
    mutation_data,
    mutation_loss,
    mutation_value_loss,
    train_model,
)

GUIDES_DIR = pathlib.Path(__file__).parent / "guides"
# The size of the shipped models (the size measured in the GESR experiment).
SHIPPED_MODEL = {"dim": 16, "depth": 1, "heads": 2}
# The GP that records edits for pre-training: the GESR experiment's (population 64, constants
# every 10 generations, 1024 edits kept per run and kind), keeping every edit with its gain.
PRETRAIN_CONFIG = GPConfig(population_size=64, const_every=10, buffer_capacity=1024, record="all")


class Guides(NamedTuple):
    """A (mutation, crossover) model pair and a JSON-able record of how it was made."""

    mutation: MutationModel
    crossover: CrossoverModel
    info: dict[str, Any]


@functools.lru_cache(maxsize=8)
def _plain_runner(pset: PrimitiveSet, config: GPConfig):
    """Seed-vmapped, jitted init and run of the plain-GP engine (compiled once per setting)."""
    eng = make_engine(pset, config)
    init = jax.jit(jax.vmap(lambda x, y, k: eng.init(x, y, key=k), (None, None, 0)))
    run = jax.jit(jax.vmap(lambda s, x, y, g: eng.run(s, x, y, None, g), (0, None, None, None)))
    return init, run


def pretrain_edits(
    pset: PrimitiveSet,
    config: GPConfig,
    x: np.ndarray,
    *,
    key: jax.Array,
    problems: int = 8,
    seeds: int = 5,
    generations: int = 20,
    shuffle_seed: int = 0,
) -> dict[str, np.ndarray]:
    """Edits recorded by plain GP on `problems` random target expressions evaluated on the
    inputs `x` (``(points, n_vars)``), `seeds` runs of `generations` each; `config.record`
    says which edits are kept ("improving" or "all"). The targets are ramped half-and-half
    trees of the engine's own initial populations (drawn from `key`), picked in the order of
    a numpy shuffle seeded by `shuffle_seed` and kept when finite, not constant and at least
    4 nodes long. Returns `merge_buffers` output (valid rows of every run, concatenated)."""
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or x.shape[1] != pset.n_vars:
        raise ValueError(f"x: expected a (points, {pset.n_vars}) array, got {x.shape}")
    if problems < 1 or seeds < 1 or generations < 1:
        raise ValueError(
            f"problems/seeds/generations: expected >= 1, got {problems}/{seeds}/{generations}"
        )
    init, run = _plain_runner(pset, config)
    k_trees, k_runs = jax.random.split(key)
    # Enough random expressions to pick `problems` valid targets from.
    n_pools = max(1, -(-16 * problems // config.population_size))
    pool = init(x, x[:, 0], jax.random.split(k_trees, n_pools))
    toks = np.asarray(pool.tokens).reshape(-1, pset.max_len)
    consts = np.asarray(pool.consts).reshape(-1, pset.max_len)
    bufs, made = [], 0
    for i in np.random.default_rng(shuffle_seed).permutation(len(toks)):
        if made == problems:
            break
        y = evaluate_reference(toks[i], consts[i], x, pset)
        if not np.all(np.isfinite(y)) or np.std(y) < 1e-3 or (toks[i] != pset.pad).sum() < 4:
            continue
        keys = jax.random.split(jax.random.fold_in(k_runs, i), seeds)
        yf = y.astype(np.float32)
        s = run(init(x, yf, keys), x, yf, generations)
        buf = jax.tree.map(np.asarray, s.buffer)  # index on the host: no per-seed dispatch
        bufs += [jax.tree.map(lambda a, j=j: a[j], buf) for j in range(seeds)]
        made += 1
    if made == 0:
        raise ValueError("x: no usable random target (all constant or non-finite on x)")
    return merge_buffers(bufs)


def select_edits(data: Mapping[str, np.ndarray], record: str) -> dict[str, np.ndarray]:
    """The recorded edits a guide variant trains on: all of them (``record="all"``) or only
    the improving ones (``"improving"``: gain > 0), from `merge_buffers` output."""
    if record == "all":
        return dict(data)
    if record != "improving":
        raise ValueError(f"record: expected 'improving' or 'all', got {record!r}")
    out = {}
    for kind in ("mut", "xo"):
        keep = data[f"{kind}_gain"] > 0
        out |= {k: v[keep] for k, v in data.items() if k.startswith(kind + "_")}
    return out


def fit_guides(
    models: tuple[MutationModel, CrossoverModel],
    data: Mapping[str, np.ndarray],
    pset: PrimitiveSet,
    *,
    key: jax.Array,
    steps: int,
    kind: str = "policy",
    chunk_steps: int = 50,
    rows: int | None = None,
    weight_sharpness: float | None = None,
    value_batch_size: int = 256,
) -> tuple[tuple[MutationModel, CrossoverModel], list[int], list[list[float]]]:
    """Train both guides on recorded edits; returns the new pair, the rows each trained on
    and the loss per step.

    ``kind="policy"`` (`mutation_loss`, `crossover_loss`; the data are improving edits): the
    newest ``rows`` rows (default all) are zero-padded to ``rows`` and trained in chunks of
    `chunk_steps` steps (Adam restarts per chunk; `steps // chunk_steps` chunks, at least
    one), so every call with the same ``rows`` and `chunk_steps` reuses one compiled loop;
    gains weighted by `edit_weights` where `weight_sharpness` is set; a model with fewer
    than 8 rows is left as it is. ``kind="value"`` (`mutation_value_loss`,
    `crossover_value_loss`; the data are all edits, `record="all"`): `steps` Adam steps on
    minibatches of `value_batch_size`."""
    km, kc = jax.random.split(key)
    if kind == "value":
        out, n_rows, losses = [], [], []
        for model, loss, fields, k in (
            (models[0], mutation_value_loss, mutation_data(data, gain=True), km),
            (models[1], crossover_value_loss, crossover_data(data, gain=True), kc),
        ):
            res = train_model(
                model, loss, fields, pset, key=k, steps=steps, batch_size=value_batch_size
            )
            out.append(res.model)
            n_rows.append(len(next(iter(fields.values()))))
            losses.append(res.losses.tolist())
        return (out[0], out[1]), n_rows, losses
    if kind != "policy":
        raise ValueError(f"kind: expected 'policy' or 'value', got {kind!r}")
    out, n_rows, losses = list(models), [], []
    for j, (loss, fields, k) in enumerate(
        (
            (mutation_loss, mutation_data(data, weight_sharpness), km),
            (crossover_loss, crossover_data(data, weight_sharpness), kc),
        )
    ):
        have = len(next(iter(fields.values())))
        size = have if rows is None else int(rows)
        n = min(have, size)
        n_rows.append(n)
        losses.append([])
        if n < 8:
            continue
        fields = {name: v[-n:] for name, v in fields.items()}  # the newest rows
        padded = {
            name: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)])
            for name, v in fields.items()
        }
        for c in range(max(1, steps // chunk_steps)):  # one compiled chunk size
            res = train_model(
                out[j],
                loss,
                padded,
                pset,
                key=jax.random.fold_in(k, c),
                steps=chunk_steps,
                n_valid=n,
            )
            out[j], losses[j] = res.model, losses[j] + res.losses.tolist()
    return (out[0], out[1]), n_rows, losses


def pretrain_guides(
    pset: PrimitiveSet,
    x: np.ndarray,
    *,
    key: jax.Array,
    config: GPConfig = PRETRAIN_CONFIG,
    record: str = "improving",
    kind: str = "policy",
    problems: int = 8,
    seeds: int = 5,
    generations: int = 20,
    steps: int = 200,
    chunk_steps: int = 50,
    weight_sharpness: float | None = None,
    models: tuple[MutationModel, CrossoverModel] | None = None,
    dim: int = SHIPPED_MODEL["dim"],
    depth: int = SHIPPED_MODEL["depth"],
    heads: int = SHIPPED_MODEL["heads"],
    shuffle_seed: int = 0,
) -> Guides:
    """Pre-train a (mutation, crossover) pair offline, for reuse on any problem of `pset`.

    Plain GP with `config` runs `seeds` times on each of `problems` random targets evaluated
    on `x` (`pretrain_edits`; `config.record` is what each run's buffer of
    `config.buffer_capacity` rows keeps, default every edit); the guides (`models`, default
    fresh ones of size `dim`/`depth`/`heads` initialised from `key`) are trained for `steps`
    steps on the edits `record` selects, as `kind` models (`fit_guides`: "policy" on
    improving edits, the shipped and measured variant, or "value" on all edits). The
    defaults are the recipe of the GESR experiment's guides (population 64, 8 targets x 5
    seeds x 20 generations, 200 steps: ~49,000 GP evaluations, ~31 CPU seconds with dim 16).
    Save the result with `save_model`; `info` records rows, losses and settings."""
    k_init, k_fit = jax.random.fold_in(key, 1), jax.random.fold_in(key, 7)
    if models is None:
        kw = dict(dim=dim, depth=depth, heads=heads)
        km, kc = jax.random.split(k_init)
        models = (
            MutationModel(pset, **kw, rngs=nnx.Rngs(km)),
            CrossoverModel(pset, **kw, rngs=nnx.Rngs(kc)),
        )
    data = pretrain_edits(
        pset,
        config,
        x,
        key=key,
        problems=problems,
        seeds=seeds,
        generations=generations,
        shuffle_seed=shuffle_seed,
    )
    data = select_edits(data, record)
    (mm, cm), rows, losses = fit_guides(
        models,
        data,
        pset,
        key=k_fit,
        steps=steps,
        kind=kind,
        chunk_steps=chunk_steps,
        rows=problems * seeds * config.buffer_capacity,
        weight_sharpness=weight_sharpness,
    )
    info = {
        "settings": guide_settings(pset, mm),
        "record": record,
        "guide_kind": kind,
        "weight_sharpness": weight_sharpness,
        "random_targets": problems,
        "seeds": seeds,
        "generations": generations,
        "population_size": config.population_size,
        "steps": steps,
        "rows_mutation": rows[0],
        "rows_crossover": rows[1],
        "loss_mutation": [round(float(v), 4) for v in losses[0]],
        "loss_crossover": [round(float(v), 4) for v in losses[1]],
    }
    return Guides(mm, cm, info)


def guide_settings(pset: PrimitiveSet, model: MutationModel | CrossoverModel) -> dict[str, Any]:
    """What a saved guide pair must match to be reused: the primitive set and model size."""
    enc = model.encoder
    dim = enc.ln.scale.shape[0]
    return {
        "n_vars": pset.n_vars,
        "operators": list(pset.operators),
        "max_len": pset.max_len,
        "use_constants": pset.use_constants,
        "model": {"dim": int(dim), "depth": len(enc.blocks), "heads": int(enc.blocks[0].heads)},
    }


@functools.lru_cache(maxsize=8)
def _load_shipped(pset: PrimitiveSet):
    path = GUIDES_DIR / f"nv{pset.n_vars}"
    if not (path / "info.json").exists():
        return None
    info = json.loads((path / "info.json").read_text())
    rngs = nnx.Rngs(0)  # templates only: every weight is restored from the files
    mm = MutationModel(pset, **SHIPPED_MODEL, rngs=rngs)
    cm = CrossoverModel(pset, **SHIPPED_MODEL, rngs=rngs)
    if info["settings"] != guide_settings(pset, mm):
        return None
    return Guides(load_model(path / "mutation", mm), load_model(path / "crossover", cm), info)


def shipped_guides(pset: PrimitiveSet) -> Guides | None:
    """The guide pair bundled with the package for `pset`, or None where none matches (only
    the default operators with ``max_len=32`` and constants, 1 to 4 variables, are shipped).
    The returned models are shared between calls: train copies (`train_model` returns new
    ones), do not update them in place."""
    return _load_shipped(pset)
