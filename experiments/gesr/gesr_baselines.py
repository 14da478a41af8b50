"""The installable competitors, gplearn 0.4.3 and pyoperon 0.6.2, on the GESR benchmark.

Both get the same data, operator set, population size, size limit and evaluation budget as
GESR and plain GP (see `budget_of`). Each `fit_*` returns the fitted model's predictions on the
train and test inputs, its sympy form, the evaluations it spent and its wall-clock seconds.
"""

import json
import pathlib
import subprocess
import sys
import time
import types

import numpy as np
import sympy

# Our operator names -> gplearn function names (exp is added below: gplearn has none).
_GPLEARN = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "sin": "sin", "cos": "cos"}
_GPLEARN.update({"log": "log", "sqrt": "sqrt", "neg": "neg"})
_OPERON = {"add", "sub", "mul", "div", "sin", "cos", "exp", "log", "sqrt", "square"}


def budget_of(gp_cfg, generations: int) -> int:
    """Evaluations one unsolved GP/GESR run spends in `generations` generations: the initial
    population, every edited child (crossover, subtree and point slots) and every constant-
    optimisation step of the `const_top_k` best (the engine's own count, see `sr.make_engine`)."""
    n = gp_cfg.population_size
    n_xo = round(gp_cfg.p_crossover * n)
    n_sm = round(gp_cfg.p_subtree_mutation * n)
    n_pm = min(round(gp_cfg.p_point_mutation * n), n - n_xo - n_sm)
    const = (generations // gp_cfg.const_every) * gp_cfg.const_top_k * (gp_cfg.const_steps + 1)
    return n + generations * (n_xo + n_sm + n_pm) + const


def _symbols(n_vars: int) -> list[sympy.Symbol]:
    return [sympy.Symbol(f"x{i}", real=True) for i in range(n_vars)]


def _protected_exp(a):
    with np.errstate(over="ignore"):
        return np.exp(np.minimum(a, 30.0))


def _fit_predict(est, x, y, xt) -> dict:
    """Fit a scikit-learn style regressor in float64: predictions and the CPU seconds of the
    fit (both libraries run single-threaded here, so this is their wall-clock time on an
    unloaded core)."""
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    t0 = time.process_time()
    est.fit(x64, y64)
    secs = time.process_time() - t0
    return {
        "train_pred": est.predict(x64),
        "test_pred": est.predict(np.asarray(xt, np.float64)),
        "seconds": secs,
    }


def fit_gplearn(x, y, xt, operators, config, budget: int, seed: int) -> dict:
    """gplearn's SymbolicRegressor with our GP settings; its `generations` is the budget
    (evaluations) divided by the population (gplearn evaluates every program of every
    generation) and it stops early once the training MSE reaches ``target_nmse * var(y)``
    (= our target)."""
    from gplearn.functions import make_function
    from gplearn.genetic import SymbolicRegressor

    funcs = [_GPLEARN[o] for o in operators if o in _GPLEARN]
    if "exp" in operators:
        funcs.append(make_function(function=_protected_exp, name="exp", arity=1))
    est = SymbolicRegressor(
        population_size=config.population_size,
        generations=max(1, round(budget / config.population_size)),
        tournament_size=config.tournament_size,
        function_set=funcs,
        metric="mse",
        stopping_criteria=config.target_nmse * float(np.var(np.asarray(y, np.float64))),
        const_range=(-2.0, 2.0),
        init_depth=(1, 4),
        p_crossover=0.5,
        p_subtree_mutation=0.2,
        p_point_mutation=0.2,
        p_hoist_mutation=0.0,
        parsimony_coefficient=config.parsimony,
        random_state=seed,
        n_jobs=1,
    )
    out = _fit_predict(est, x, y, xt)
    out["generations"] = len(est.run_details_["generation"])
    out["expr"] = str(est._program)
    out["evals"] = config.population_size * len(est.run_details_["generation"])
    return out


def fit_operon(x, y, xt, operators, config, budget: int, seed: int) -> dict:
    """pyoperon's SymbolicRegressor (its defaults: linear scaling, keep-best reinsertion),
    with our population, size limit, operator set and evaluation budget (`max_evaluations`;
    its generation limit is set out of reach). Operon has no target-error stop, so it always
    spends its budget."""
    from pyoperon.sklearn import SymbolicRegressor

    symbols = ",".join([o for o in operators if o in _OPERON] + ["constant", "variable"])
    est = SymbolicRegressor(
        allowed_symbols=symbols,
        population_size=config.population_size,
        generations=10**6,
        max_evaluations=budget,
        max_length=config.max_len,
        tournament_size=config.tournament_size,
        n_threads=1,
        random_state=seed,
    )
    out = _fit_predict(est, x, y, xt)
    out["expr"] = est.get_model_string(est.model_, 8).replace("^", "**")
    out["evals"] = int(est.stats_["evaluation_count"])
    return out


BASELINES = {"gplearn": fit_gplearn, "Operon": fit_operon}


def to_sympy(method: str, text: str, n_vars: int) -> sympy.Expr:
    """A baseline's model text as sympy in the variables ``x0, x1, ..`` (gplearn writes
    function calls over ``X0..``; Operon infix over ``X1..``)."""
    syms = _symbols(n_vars)
    if method == "Operon":
        names = {f"X{i + 1}": s for i, s in enumerate(syms)}
    else:
        names = {f"X{i}": s for i, s in enumerate(syms)}
        names.update(
            add=lambda a, b: a + b,
            sub=lambda a, b: a - b,
            mul=lambda a, b: a * b,
            div=lambda a, b: a / b,
            neg=lambda a: -a,
            log=sympy.log,
            exp=sympy.exp,
            sqrt=sympy.sqrt,
        )
    return sympy.sympify(text, locals=names)


def launch(jobs: list[dict], settings: dict, out: pathlib.Path) -> subprocess.Popen:
    """Run `jobs` in a separate process (it imports neither JAX nor the experiment), so the
    baselines use the second core while the main process compiles and runs GESR.

    Wall-clock jobs ("mode": "time") get the evaluations that the same method, problem and
    seed managed per second in its evaluation-budget job times `settings["seconds"]` (the
    same calibration as GP and GESR: a budget of T seconds at the method's own speed)."""
    src = out.with_suffix(".jobs.json")
    src.write_text(json.dumps({"jobs": jobs, "settings": settings}))
    return subprocess.Popen([sys.executable, __file__, str(src), str(out)])


def _main(src: str, out: str) -> None:
    spec = json.loads(pathlib.Path(src).read_text())
    cfg = types.SimpleNamespace(**spec["settings"])
    results, speed = [], {}
    for job in spec["jobs"]:
        x, y, xt = (np.asarray(job[k], np.float32) for k in ("x", "y", "xt"))
        run = (job["problem"], job["method"], job["seed"], job["noise"])
        budget = cfg.budget
        if job["mode"] == "time":  # same problem and seed, evaluation-budget mode
            budget = max(cfg.population_size, round(speed[run] * cfg.seconds))
        fit = BASELINES[job["method"]](x, y, xt, cfg.operators, cfg, budget, job["seed"])
        if job["mode"] == "evals":
            # Evaluations per second of this method here (gplearn: whole generations).
            evals = fit.get("generations", 0) * cfg.population_size or fit["evals"]
            speed[run] = evals / max(fit["seconds"], 1e-9)
        fit["train_pred"] = np.asarray(fit["train_pred"], np.float64).tolist()
        fit["test_pred"] = np.asarray(fit["test_pred"], np.float64).tolist()
        results.append({k: job[k] for k in ("problem", "method", "seed", "mode", "noise")} | fit)
    tmp = pathlib.Path(out + ".tmp")
    tmp.write_text(json.dumps(results))
    tmp.rename(out)


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
