"""Do the guides predict which edits improve fitness? Precision@k and AUC on HELD-OUT edits.

Plain GP (the experiment's engine and settings, guides off) records every point mutation and
crossover with its fitness gain on (a) the pre-training random targets (training data),
(b) other random targets (held out) and (c) the development Nguyen problems at the
development seeds (held out; never the reported seeds). Each edit is scored by

- `policy`: the shipped guides (trained on improving edits only): the log-likelihood ratio of
  the recorded edit against the uniform proposal, ``log p(edit | context) + log n_choices``
  (for a policy trained on improving edits this is ``log P(improve | edit) / P(improve)``
  up to the context's own rate);
- `value`: the same networks trained on ALL edits with binary cross-entropy on "improved"
  (`symreg_jax.mutation_value_loss` / `crossover_value_loss`): the predicted log-odds;
- `random`: a uniform random score (the baseline every model must beat).

Reported per edit kind: the base rate of improving edits, ROC AUC, and the precision among
the top 1 %, 10 % and 25 % of edits by score (lift = precision / base rate).

python experiments/gesr/gesr_quality.py --out=/tmp/gesr_quality.json
"""

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import train
from config import get_config
from flax import nnx
from gesr_problems import ALL

import symreg_jax as sr


def auc(score, label):
    """ROC AUC by ranks (ties share their mean rank)."""
    label = np.asarray(label, bool)
    pos, neg = label.sum(), (~label).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    _, inv = np.unique(score, return_inverse=True)
    ranks = (np.bincount(inv, ranks) / np.bincount(inv))[inv]
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))


def precision_at(score, label, frac):
    k = max(1, int(round(frac * len(score))))
    top = np.argsort(-np.asarray(score), kind="stable")[:k]
    return float(np.mean(np.asarray(label)[top]))


def scores(mm, cm, data, pset, kind):
    """Per recorded edit: the models' score of that edit (see the module docstring)."""
    out = {}
    for name, fn in (("mut", sr.mutation_edit_scores), ("xo", sr.crossover_edit_scores)):
        model = mm if name == "mut" else cm
        fields = (sr.mutation_data if name == "mut" else sr.crossover_data)(data)
        n = len(next(iter(fields.values())))
        got = []
        for i in range(0, n, 4096):
            batch = {k: jnp.asarray(v[i : i + 4096]) for k, v in fields.items()}
            got.append(np.asarray(fn(model, batch, pset, kind=kind)))
        out[name] = np.concatenate(got)
    return out


def edit_sets(runner, pset, config, args):
    """Training edits (the pre-training random targets), held-out random targets, held-out
    development Nguyen runs; every edit with its gain (record='all')."""
    nv_problems = [ALL[p] for p in args.problems.split(",")]
    n_train = train._n_train(nv_problems[0], config)
    ranges = [(-1.0, 1.0)]
    sets = {}
    c_train = config.copy_and_resolve_references()
    c_train.seed = 12345  # as gesr_pretrain.py
    sets["train (random targets)"] = train._pretrain_data(
        runner, pset, ranges, n_train, c_train, jax.random.key(12345 + 1)
    )
    c_held = config.copy_and_resolve_references()
    c_held.seed = 777
    sets["held-out random targets"] = train._pretrain_data(
        runner, pset, ranges, n_train, c_held, jax.random.key(777)
    )
    bufs = []
    for j, p in enumerate(nv_problems):
        x, y, _, _ = train._data(p, config, 50 + j, 0.0)  # development samples (gesr_select)
        keys = jax.random.split(jax.random.key(args.seed0 + j), config.seeds)
        s = runner.run(False, x, y, keys, args.generations)
        buf = jax.tree.map(np.asarray, s.buffer)
        bufs += [jax.tree.map(lambda a, i=i: a[i], buf) for i in range(config.seeds)]
    sets["held-out dev Nguyen"] = sr.merge_buffers(bufs)
    return sets


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", default="Nguyen-1,Nguyen-2,Nguyen-6")
    ap.add_argument("--seed0", type=int, default=100)  # development seeds
    ap.add_argument("--generations", type=int, default=40)
    ap.add_argument("--value_steps", type=int, default=400)
    ap.add_argument("--out", default="/tmp/gesr_quality.json")
    args = ap.parse_args()
    config = get_config("small")
    t0 = time.process_time()
    pset = sr.PrimitiveSet(tuple(config.operators), 1, config.max_len)
    kw = train._model_kw(config)
    mm = sr.MutationModel(pset, **kw, rngs=nnx.Rngs(0))
    cm = sr.CrossoverModel(pset, **kw, rngs=nnx.Rngs(1))
    runner = train._Runner(pset, dataclasses.replace(train.gp_config(config), record="all"), mm, cm)
    sets = edit_sets(runner, pset, config, args)
    pm, pc, _ = train._shipped_guides(pset, config, (mm, cm))
    vm, vc = train.fit_value_guides(
        (mm, cm), sets["train (random targets)"], pset, jax.random.key(3), args.value_steps
    )
    rng = np.random.default_rng(0)
    report = {}
    for set_name, data in sets.items():
        labels = {"mut": data["mut_gain"] > 0, "xo": data["xo_gain"] > 0}
        got = {
            "policy": scores(pm, pc, data, pset, "policy"),
            "value": scores(vm, vc, data, pset, "value"),
            "random": {k: rng.random(len(v)) for k, v in labels.items()},
        }
        for kind, lab in labels.items():
            base = float(np.mean(lab))
            for model, sc in got.items():
                row = {
                    "edits": int(len(lab)),
                    "base_rate": base,
                    "auc": auc(sc[kind], lab),
                } | {f"prec@{f:g}": precision_at(sc[kind], lab, f) for f in (0.01, 0.1, 0.25)}
                report[f"{set_name} | {kind} | {model}"] = row
                print(
                    f"{set_name:26s} {kind:3s} {model:6s} n={row['edits']:6d} "
                    f"base={base:.3f} auc={row['auc']:.3f} "
                    + " ".join(
                        f"p@{f:g}={row[f'prec@{f:g}']:.3f}"
                        f"(x{row[f'prec@{f:g}'] / max(base, 1e-9):.1f})"
                        for f in (0.01, 0.1, 0.25)
                    ),
                    flush=True,
                )
    report["cpu_seconds"] = time.process_time() - t0
    print(f"{report['cpu_seconds']:.0f} CPU s")
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
