"""Choosing GESR's guide variant on DEVELOPMENT problems and seeds (not the reported ones).

Each variant: the two BERTs pre-trained on edits recorded by plain GP on random target
expressions (every edit with its gain is recorded once; a variant either keeps only the
improving ones or weights all of them by `edit_weights`), then GP and GESR from the same
initial populations on the development problems, paired by seed. Prints, per variant, runs
solved and the censored paired comparison of evaluations to solution (unsolved = more than
the budget). Used to pick the variant of `config.py` (development seeds 100-129) and, with
fresh seeds, to confirm it (`--seed0=5000 --seeds=100`); the numbers are in the README.
"shipped-*" variants use the experiment's guides (experiments/gesr/guides), "package-*" the
pairs shipped inside symreg_jax (`sr.shipped_guides`, what `GESRRegressor` uses by default);
neither needs the pre-training data, which is then not recorded.

python experiments/gesr/gesr_select.py --seeds=30 --out=/tmp/gesr_select.json
python experiments/gesr/gesr_select.py --seeds=100 --seed0=5000 --variants=screen4-policy-xo
python experiments/gesr/gesr_select.py --seeds=50 --seed0=8000 \
    --variants=package-screen4-xo,shipped-screen4-xo
"""

import argparse
import dataclasses
import json
import time

import jax
import numpy as np
import train
from config import get_config
from flax import nnx
from gesr_problems import ALL
from gesr_report import censored_pairs

import symreg_jax as sr

VARIANTS = {
    "improving": dict(record="improving", sharpness=None, guide_rate=1.0, temperature=1.0),
    "all-weighted": dict(record="all", sharpness=3.0, guide_rate=1.0, temperature=1.0),
    "all-weighted-mix0.5": dict(record="all", sharpness=3.0, guide_rate=0.5, temperature=1.0),
    "all-weighted-T0.5": dict(record="all", sharpness=3.0, guide_rate=1.0, temperature=0.5),
    "improving-mix0.5": dict(record="improving", sharpness=None, guide_rate=0.5, temperature=1.0),
    "improving-T0.5": dict(record="improving", sharpness=None, guide_rate=1.0, temperature=0.5),
    "improving-T2": dict(record="improving", sharpness=None, guide_rate=1.0, temperature=2.0),
    # The guides shipped in experiments/gesr/guides (gesr_pretrain.py: 32 random targets).
    "shipped": dict(record="improving", sharpness=None, guide_rate=1.0, temperature=1.0),
    "shipped-mix0.5": dict(record="improving", sharpness=None, guide_rate=0.5, temperature=1.0),
    "shipped-screen4-xo": dict(record="improving", screen=4, screen_mutation=False),
    # Session 11: the same with the package's own guides (sr.shipped_guides: random targets
    # on inputs uniform in [-3, 3], never a benchmark problem), GESRRegressor's default.
    "package-screen4-xo": dict(record="improving", screen=4, screen_mutation=False),
    # Session 5: model pre-screen of K candidate edits per guided slot (only the best-scored
    # child is evaluated). "value": the guides trained on all edits to predict "improved".
    "screen4-policy-xo": dict(record="improving", screen=4, screen_mutation=False),
    "screen4-policy": dict(record="improving", screen=4),
    "screen2-policy-xo": dict(record="improving", screen=2, screen_mutation=False),
    "screen8-policy-xo": dict(record="improving", screen=8, screen_mutation=False),
    "screen4-value-xo": dict(record="all", value=True, screen=4, screen_mutation=False),
    "screen4-value": dict(record="all", value=True, screen=4),
    "screen8-value-xo": dict(record="all", value=True, screen=8, screen_mutation=False),
    "screen2-value-xo": dict(record="all", value=True, screen=2, screen_mutation=False),
}
DEFAULTS = dict(
    sharpness=None, guide_rate=1.0, temperature=1.0, screen=1, screen_mutation=True, value=False
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", default="Nguyen-1,Nguyen-2,Nguyen-6")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--seed0", type=int, default=100)  # development seeds
    ap.add_argument("--generations", type=int, default=100)
    ap.add_argument("--pretrain_problems", type=int, default=8)
    ap.add_argument("--pretrain_steps", type=int, default=200)
    ap.add_argument("--value_steps", type=int, default=400)
    ap.add_argument("--out", default="/tmp/gesr_select.json")
    args = ap.parse_args()
    config = get_config("small")
    config.seed = args.seed0
    config.pretrain_problems = args.pretrain_problems
    config.pretrain_steps = args.pretrain_steps
    problems = [ALL[p] for p in args.problems.split(",")]
    nv = problems[0].n_vars
    n_train = train._n_train(problems[0], config)
    ranges = [
        (min(p.ranges[j][0] for p in problems), max(p.ranges[j][1] for p in problems))
        for j in range(nv)
    ]
    print("input ranges of the problems:", {p.name: p.ranges for p in problems})
    pset = sr.PrimitiveSet(tuple(config.operators), nv, config.max_len)
    base = train.gp_config(config)
    key = jax.random.key(args.seed0)
    # Pre-training data once (plain GP records every edit with its gain).
    mm = sr.MutationModel(pset, **train._model_kw(config), rngs=nnx.Rngs(config.seed))
    cm = sr.CrossoverModel(pset, **train._model_kw(config), rngs=nnx.Rngs(config.seed + 1))
    rec = train._Runner(pset, dataclasses.replace(base, record="all"), mm, cm)
    t0 = time.process_time()
    variants = args.variants.split(",")
    if all(n.startswith(("shipped", "package")) for n in variants):
        data = None  # pre-trained guides only: no recorded edits needed
    else:
        data = train._pretrain_data(rec, pset, ranges, n_train, config, key)
        print(
            f"pretraining data: {len(data['mut_gain'])} mutations, {len(data['xo_gain'])} "
            f"crossovers ({time.process_time() - t0:.0f} CPU s)"
        )
    out, gp_runs = {}, {}
    for name in variants:
        v = DEFAULTS | VARIANTS[name]
        t0 = time.process_time()
        cfg = dataclasses.replace(
            base,
            temperature=v["temperature"],
            guide_rate=v["guide_rate"],
            screen=v["screen"],
            guide_kind="value" if v["value"] else "policy",
            screen_mutation=v["screen_mutation"],
        )
        runner = train._Runner(pset, cfg, mm, cm)
        c2 = config.copy_and_resolve_references()
        c2.weight_sharpness = v["sharpness"]
        if v["value"]:
            m2, c2m = train.fit_value_guides(
                (mm, cm), data, pset, jax.random.fold_in(key, 7), args.value_steps
            )
            rows, losses = [len(data["mut_gain"]), len(data["xo_gain"])], [[], []]
        elif name.startswith("shipped"):
            m2, c2m, info = train._shipped_guides(pset, c2, (mm, cm))
            rows, losses = [info["rows_mutation"]], [info["loss_mutation"]]
        elif name.startswith("package"):
            g = sr.shipped_guides(pset)
            if g is None:
                raise SystemExit(f"symreg_jax ships no guide pair for {pset}")
            m2, c2m, box = g.mutation, g.crossover, g.info["x"]
            rows, losses = [g.info["rows_mutation"]], [g.info["loss_mutation"]]
            print(f"package guides nv{nv}: inputs uniform in [{box['low']}, {box['high']}]")
        else:
            d = sr.select_edits(data, v["record"])
            (m2, c2m), rows, losses = train._fit_guides(
                (mm, cm), d, pset, c2, jax.random.fold_in(key, 7), config.pretrain_steps
            )
        runner.mst, runner.cst = nnx.state(m2), nnx.state(c2m)
        res = {"GP": [], "GESR": []}
        for j, p in enumerate(problems):
            x, y, _, _ = train._data(p, config, 50 + j, 0.0)
            keys = jax.random.split(jax.random.fold_in(key, 1000 + j), args.seeds)
            for m in res:
                if m == "GP" and p.name in gp_runs:  # guides off: the same runs every variant
                    res[m] += gp_runs[p.name]
                    continue
                s = runner.run(m == "GESR", x, y, keys, args.generations)
                res[m] += [int(a) for a in np.asarray(s.solved_at)]
                if m == "GP":
                    gp_runs[p.name] = res[m][-args.seeds :]
        budget = int(np.max(np.asarray(s.evaluations)))  # the last GESR run's
        pairs = censored_pairs(np.asarray(res["GESR"]), np.asarray(res["GP"]))
        out[name] = {"variant": v, "rows": rows, "budget": budget, "solved_at": res} | pairs
        print(
            f"{name:22s} solved GESR {np.sum(np.asarray(res['GESR']) >= 0):2d} "
            f"GP {np.sum(np.asarray(res['GP']) >= 0):2d} / {len(res['GP'])}  "
            f"GESR fewer {pairs['fewer']} more {pairs['more']} p={pairs['p']:.3g}  "
            f"loss m {losses[0][-1] if losses[0] else float('nan'):.3f} "
            f"({time.process_time() - t0:.0f} CPU s)",
            flush=True,
        )
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
