"""Offline pre-training of GESR's two BERTs, once, for reuse across problems and runs.

Plain GP runs on random target expressions (never on a benchmark problem) record every point
mutation and crossover with its fitness gain; the guides of the configured variant
(`config.record`, `config.weight_sharpness`) are trained on them and saved with orbax under
`experiments/gesr/guides/nv<k>/` (one pair per number of input variables), with a JSON record
of the data, losses, settings and CPU seconds. `train.py` restores them when the settings
match (`config.pretrained`), so the `small` and `smoke` presets do not pay for pre-training;
the evaluations spent here are not charged to any benchmark run (offline, amortised).

python experiments/gesr/gesr_pretrain.py --config=small --problems=8 --steps=200
"""

import argparse
import dataclasses
import json
import pathlib
import shutil
import time

import jax
import numpy as np
import train
from config import get_config
from flax import nnx
from gesr_problems import ALL

import symreg_jax as sr

HERE = pathlib.Path(__file__).parent


def settings(config, nv):
    """What a saved guide pair must match to be reused."""
    return {
        "n_vars": nv,
        "operators": list(config.operators),
        "max_len": config.max_len,
        "model": train._model_kw(config),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--generations", type=int, default=20)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=12345)  # not a benchmark seed
    args = ap.parse_args()
    config = get_config(args.config)
    config.seed = args.seed
    config.pretrain_problems = args.problems
    config.pretrain_generations = args.generations
    names = dict.fromkeys(config.problems + config.solve_problems)
    problems = [ALL[n] for n in names]
    out_dir = HERE / config.pretrained
    out_dir.mkdir(exist_ok=True)
    for (nv, n_train), group in train._groups(problems, config).items():
        t0 = time.process_time()
        ranges = [
            (min(p.ranges[j][0] for p in group), max(p.ranges[j][1] for p in group))
            for j in range(nv)
        ]
        pset = sr.PrimitiveSet(tuple(config.operators), nv, config.max_len)
        mm = sr.MutationModel(pset, **train._model_kw(config), rngs=nnx.Rngs(config.seed))
        cm = sr.CrossoverModel(pset, **train._model_kw(config), rngs=nnx.Rngs(config.seed + 1))
        gp_cfg = dataclasses.replace(train.gp_config(config), record="all")
        x = train._sample_x(ranges, n_train, np.random.default_rng(config.seed))
        evals = (
            args.problems
            * config.seeds
            * (config.population_size + args.generations * round(0.9 * config.population_size))
        )
        mm, cm, got = sr.pretrain_guides(  # the library's recipe with this config's settings
            pset,
            x,
            key=jax.random.key(config.seed + nv),
            config=gp_cfg,  # records every edit; `record` selects the ones trained on
            record=config.record,
            kind=config.guide_kind,
            problems=args.problems,
            seeds=config.seeds,
            generations=args.generations,
            steps=args.steps,
            chunk_steps=config.online_steps,
            weight_sharpness=config.weight_sharpness,
            models=(mm, cm),
            shuffle_seed=config.seed,
        )
        rows = [got["rows_mutation"], got["rows_crossover"]]
        losses = [got["loss_mutation"], got["loss_crossover"]]
        target = out_dir / f"nv{nv}"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        sr.save_model(target / "mutation", mm)
        sr.save_model(target / "crossover", cm)
        info = {
            "settings": settings(config, nv),
            "record": config.record,
            "guide_kind": config.guide_kind,
            "weight_sharpness": config.weight_sharpness,
            "random_targets": args.problems,
            "generations": args.generations,
            "seeds": config.seeds,
            "approx_gp_evaluations": int(evals),
            "steps": args.steps,
            "ranges": ranges,
            "n_train": n_train,
            "rows_mutation": rows[0],
            "rows_crossover": rows[1],
            "loss_mutation": [round(float(v), 4) for v in losses[0]],
            "loss_crossover": [round(float(v), 4) for v in losses[1]],
            "cpu_seconds": time.process_time() - t0,
            "command": "python experiments/gesr/gesr_pretrain.py "
            + " ".join(f"--{k}={v}" for k, v in vars(args).items()),
        }
        (target / "info.json").write_text(json.dumps(info, indent=1))
        print(
            f"nv{nv}: {rows} rows, final losses {info['loss_mutation'][-1]:.3f} / "
            f"{info['loss_crossover'][-1]:.3f}, {info['cpu_seconds']:.0f} CPU s",
            flush=True,
        )


if __name__ == "__main__":
    main()
