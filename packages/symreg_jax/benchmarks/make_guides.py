"""Pre-train the guide pairs shipped with symreg_jax (``src/symreg_jax/guides/nv<k>/``).

One pair per number of input variables (1 to 4) for the default operators, ``max_len=32``
and constants: `pretrain_guides` with its defaults (the recipe of the GESR experiment's
guides: plain GP, population 64, on 8 random target expressions x 5 seeds x 20 generations,
200 training steps, models of dim 16 / depth 1 / 2 heads), the random targets evaluated on
50 inputs drawn uniformly from [-3, 3]^k. Nothing here sees a benchmark problem. Writes each
pair with `save_model` and an ``info.json`` (settings, rows, losses, CPU seconds, command);
`GESRRegressor` loads them by default (`shipped_guides`).

python packages/symreg_jax/benchmarks/make_guides.py            # all four, ~2 CPU minutes
python packages/symreg_jax/benchmarks/make_guides.py --n_vars=1
"""

import argparse
import json
import pathlib
import shutil
import time

import jax
import numpy as np

import symreg_jax as sr
from symreg_jax._pretrain import GUIDES_DIR


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n_vars", default="1,2,3,4")
    ap.add_argument("--points", type=int, default=50)
    ap.add_argument("--low", type=float, default=-3.0)
    ap.add_argument("--high", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--out", default=str(GUIDES_DIR))
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for nv in (int(v) for v in args.n_vars.split(",")):
        t0 = time.process_time()
        pset = sr.PrimitiveSet(sr.DEFAULT_OPERATORS, nv, 32)
        rng = np.random.default_rng(args.seed + nv)
        x = rng.uniform(args.low, args.high, (args.points, nv)).astype(np.float32)
        g = sr.pretrain_guides(
            pset, x, key=jax.random.key(args.seed + nv), shuffle_seed=args.seed + nv
        )
        target = out / f"nv{nv}"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        sr.save_model(target / "mutation", g.mutation)
        sr.save_model(target / "crossover", g.crossover)
        info = g.info | {
            "x": {"points": args.points, "low": args.low, "high": args.high},
            "cpu_seconds": round(time.process_time() - t0, 1),
            "jax": jax.__version__,
            "command": "python packages/symreg_jax/benchmarks/make_guides.py "
            + " ".join(f"--{k}={v}" for k, v in vars(args).items() if k != "out"),
        }
        (target / "info.json").write_text(json.dumps(info, indent=1) + "\n")
        print(
            f"nv{nv}: rows {g.info['rows_mutation']}/{g.info['rows_crossover']}, final losses "
            f"{g.info['loss_mutation'][-1]:.3f}/{g.info['loss_crossover'][-1]:.3f}, "
            f"{info['cpu_seconds']:.0f} CPU s",
            flush=True,
        )


if __name__ == "__main__":
    main()
