"""GESR vs plain GP vs gplearn vs Operon, side by side on the same problems and budgets.

1. Problems are grouped by (variables, training points): one group shares one primitive set,
   one pair of BERT guides and ONE compiled engine (the guides are switched on or off at run
   time, so GESR and plain GP run the same executable and every problem of the group reuses it).
2. Offline pre-training per group: plain GP runs on random target expressions record the point
   mutations and crossovers that improved fitness; the two BERTs are trained on them and
   checkpointed with orbax (a resumed run restores them).
3. Benchmark: per problem, GP and GESR run from the same seeds (same initial populations,
   seeds vmapped into one call) with the same generation and evaluation budget; gplearn and
   Operon get the same population, operators, size limit and evaluation budget.
"""

import contextlib
import json
import pathlib
import signal
import time

import gesr_baselines
import jax
import numpy as np
import orbax.checkpoint as ocp
import sympy
from flax import nnx
from gesr_problems import ALL
from gesr_report import case_name, report

import symreg_jax as sr
import xplib


def _r2(pred: np.ndarray, y: np.ndarray) -> float:
    pred = np.asarray(pred, np.float64)
    if not np.all(np.isfinite(pred)):
        return -np.inf
    return float(1 - np.sum((y - pred) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-300))


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raise TimeoutError after `seconds` (sympy's simplify has no time limit of its own),
    and again every 0.25 s: an alarm that lands in a callback (e.g. a GC hook) is swallowed."""

    def _raise(signum, frame):
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.25)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_SYMPY_ERRORS = (TimeoutError, TypeError, ValueError, RecursionError, sympy.SympifyError)


def _symbolic(make_expr, truth, seconds, check):
    """(exact recovery, expression size in sympy nodes, text); recovery is only checked where
    `check`, and undecided within the time limit counts as not recovered."""
    try:
        with _time_limit(seconds):
            expr = make_expr()
            size = sum(1 for _ in sympy.preorder_traversal(expr))
            text = str(expr)
    except _SYMPY_ERRORS:
        return False, -1, "?"
    if not check:
        return False, size, text
    try:
        with _time_limit(seconds):
            return bool(sr.is_symbolic_match(expr, truth)), size, text
    except _SYMPY_ERRORS:
        return False, size, text


class _Runner:
    """Seed-vmapped init and run of one engine whose guides are switched at run time (one
    compiled `run` for GESR, plain GP and the online fine-tuned variants)."""

    def __init__(self, pset, gp_cfg, mm, cm):
        self.gp_cfg = gp_cfg
        self.mgd, self.mst = mgd, _ = nnx.split(mm)
        self.cgd, self.cst = cgd, _ = nnx.split(cm)
        eng = sr.make_engine(pset, gp_cfg, mgd, cgd)

        def run(s, x, y, m, c, on, g):
            return eng.run(s, x, y, (m, c, on), g)

        self._init = jax.jit(jax.vmap(lambda x, y, k: eng.init(x, y, key=k), (None, None, 0)))
        self._run = jax.jit(jax.vmap(run, (0, None, None, None, None, None, None)))

    def init(self, x, y, keys):
        return self._init(x, y, keys)

    def resume(self, state, x, y, generations, guided=True, guides=None):
        """`generations` more generations of every seed, with `guides` (default: the
        runner's own pre-trained pair) switched on where `guided`."""
        m, c = guides if guides is not None else (self.mst, self.cst)
        return self._run(state, x, y, m, c, bool(guided), generations)

    def run(self, guided, x, y, keys, generations):
        """Fresh populations from `keys` (vmapped), evolved for `generations`."""
        return self.resume(self.init(x, y, keys), x, y, generations, guided)


def _sample_x(ranges, n, rng):
    lo, hi = np.array([r[0] for r in ranges]), np.array([r[1] for r in ranges])
    return rng.uniform(lo, hi, (n, len(ranges))).astype(np.float32)


def _pretrain_data(runner, pset, ranges, n_train, config, key):
    """Edits recorded by plain GP (the runner's settings, guides off) on
    `config.pretrain_problems` random target expressions: `sr.pretrain_edits` on
    `n_train` inputs drawn from `ranges`."""
    x = _sample_x(ranges, n_train, np.random.default_rng(config.seed))
    return sr.pretrain_edits(
        pset,
        runner.gp_cfg,
        x,
        key=key,
        problems=config.pretrain_problems,
        seeds=config.seeds,
        generations=config.pretrain_generations,
        shuffle_seed=config.seed,
    )


def gp_config(config) -> sr.GPConfig:
    return sr.GPConfig(
        population_size=config.population_size,
        tournament_size=config.tournament_size,
        parsimony=config.parsimony,
        target_nmse=config.target_nmse,
        const_every=config.const_every,
        temperature=config.temperature,
        buffer_capacity=config.buffer_capacity,
        record=config.record,
        guide_rate=config.guide_rate,
        screen=config.screen,
        guide_kind=config.guide_kind,
        screen_mutation=config.screen_mutation,
    )


def _fit_guides(models, data, pset, config, key, steps):
    """Both guides trained on recorded edits with `sr.fit_guides` (policy losses), padded to
    one fixed row count and chunked by `online_steps`, so pre-training and every online
    fine-tuning share one compiled training loop per model."""
    return sr.fit_guides(
        models,
        data,
        pset,
        key=key,
        steps=steps,
        chunk_steps=config.online_steps,
        rows=max(config.pretrain_problems, 1) * config.seeds * config.buffer_capacity,
        weight_sharpness=config.weight_sharpness,
    )


def fit_value_guides(models, data, pset, key, steps):
    """Both guides trained as VALUE models on all recorded edits (`sr.fit_guides`,
    ``kind="value"``)."""
    return sr.fit_guides(models, data, pset, key=key, steps=steps, kind="value")[0]


def _shipped_guides(pset, config, models):
    """The guide pair pre-trained offline by gesr_pretrain.py for this number of variables,
    if `config.pretrained` names one whose settings and variant match, else None."""
    if not config.pretrained:
        return None
    import gesr_pretrain  # noqa: PLC0415 (only here: it imports this module)

    path = pathlib.Path(__file__).parent / config.pretrained / f"nv{pset.n_vars}"
    if not (path / "info.json").exists():
        return None
    info = json.loads((path / "info.json").read_text())
    want = gesr_pretrain.settings(config, pset.n_vars)
    if info["settings"] != want or (
        info["record"],
        info["weight_sharpness"],
        info.get("guide_kind", "policy"),
    ) != (config.record, config.weight_sharpness, config.guide_kind):
        return None
    mm = sr.load_model(path / "mutation", models[0])
    cm = sr.load_model(path / "crossover", models[1])
    return mm, cm, info | {"shipped": str(path.relative_to(pathlib.Path(__file__).parent))}


def _guides(workdir, tag, pset, ranges, n_train, config, runner, models, key):
    """Pre-trained (mutation, crossover) models: restored from the checkpoint or trained."""
    mm, cm = models
    t0 = time.process_time()
    mngr = xplib.checkpoint_manager(pathlib.Path(workdir) / f"guides_{tag}")
    info_path = pathlib.Path(workdir) / f"guides_{tag}.json"
    target = {"mutation": nnx.state(mm), "crossover": nnx.state(cm)}
    info = {"rows_mutation": 0, "rows_crossover": 0, "loss_mutation": [], "loss_crossover": []}
    if mngr.latest_step() is not None:
        if info_path.exists():
            info = json.loads(info_path.read_text())
        got = mngr.restore(
            mngr.latest_step(), args=ocp.args.StandardRestore(jax.eval_shape(lambda: target))
        )
        nnx.update(mm, got["mutation"])
        nnx.update(cm, got["crossover"])
        info["restored"] = True
        return mm, cm, info
    shipped = _shipped_guides(pset, config, (mm, cm))
    if shipped is not None:
        mm, cm, info = shipped
        info["seconds"] = 0.0  # paid once, offline: info["cpu_seconds"]
        return mm, cm, info
    mm, cm, got = sr.pretrain_guides(
        pset,
        _sample_x(ranges, n_train, np.random.default_rng(config.seed)),
        key=key,
        config=runner.gp_cfg,
        record=config.record,
        kind=config.guide_kind,
        problems=config.pretrain_problems,
        seeds=config.seeds,
        generations=config.pretrain_generations,
        steps=config.pretrain_steps,
        chunk_steps=config.online_steps,
        weight_sharpness=config.weight_sharpness,
        models=(mm, cm),
        shuffle_seed=config.seed,
    )
    info.update({k: got[k] for k in ("rows_mutation", "rows_crossover")})
    info.update({k: got[k] for k in ("loss_mutation", "loss_crossover")})
    mngr.save(
        1, args=ocp.args.StandardSave({"mutation": nnx.state(mm), "crossover": nnx.state(cm)})
    )
    mngr.wait_until_finished()
    info["seconds"] = time.process_time() - t0
    info_path.write_text(json.dumps(info))
    return mm, cm, info


def _row(train_pred, test_pred, y, yt, evals, solved_evals, seconds, make_expr, truth, config):
    nmse = 1 - _r2(train_pred, y)
    r2 = _r2(test_pred, yt)
    solved = bool(nmse <= config.target_nmse)
    symbolic, size, text = _symbolic(make_expr, truth, config.sympy_seconds, r2 > 0.999)
    return {
        "solved": solved,
        "evals": int(solved_evals if solved else evals),
        "evals_spent": int(evals),
        "r2": r2,
        "accurate": r2 > 0.999,
        "symbolic": bool(symbolic) and r2 > 0.999,
        "size": size,
        "seconds": seconds,
        "expr": text[:200],
    }


def _cases(config):
    """(budget mode, noise level) pairs: the evaluation budget at every noise level, the
    wall-clock budget at `time_noise_levels`."""
    return [("evals", g) for g in config.noise_levels] + [
        ("time", g) for g in config.time_noise_levels
    ]


def _data(problem, config, step, noise):
    """Train (with SRBench noise) and noise-free test samples; the same for every method and
    both budget modes."""
    rng = np.random.default_rng(config.seed + step + int(round(1e4 * noise)) * 1000)
    x, y = problem.sample(_n_train(problem, config), rng, noise)
    xt, yt = problem.sample(config.n_test, rng, test=True)
    return x, y, xt, yt


def _rows(s, secs, x, y, xt, yt, pset, truth, config):
    s = jax.tree.map(np.asarray, s._replace(key=None))  # index on the host
    y64, yt64 = y.astype(np.float64), yt.astype(np.float64)
    rows = []
    for i in range(config.seeds):
        tok, cst = s.best_tokens[i], s.best_consts[i]
        rows.append(
            _row(
                sr.evaluate_reference(tok, cst, x, pset),
                sr.evaluate_reference(tok, cst, xt, pset),
                y64,
                yt64,
                int(s.evaluations[i]),
                int(s.solved_at[i]),
                secs,
                lambda tok=tok, cst=cst: sr.to_sympy(tok, cst, pset, digits=6),
                truth,
                config,
            )
        )
        rows[-1]["generations"] = int(s.generation[i])
    return {"rows": rows}


def _online(runner, x, y, keys, models, pset, config, key):
    """GESR with online fine-tuning: every `online_every` generations both guides are trained
    for `online_steps` steps on all improving edits recorded so far by the seeds of this run
    (the seeds share one guide pair), starting from `models`."""
    mm, cm = models
    s, done = runner.init(x, y, keys), 0
    while done < config.generations:
        g = min(config.online_every, config.generations - done)
        s = runner.resume(s, x, y, g, True, (nnx.state(mm), nnx.state(cm)))
        done += g
        if done >= config.generations or bool(
            np.all(np.asarray(s.best_nmse) <= config.target_nmse)
        ):
            break
        buf = jax.tree.map(np.asarray, s.buffer)
        data = sr.merge_buffers(
            [jax.tree.map(lambda a, j=j: a[j], buf) for j in range(config.seeds)]
        )
        data = sr.select_edits(data, config.record)
        (mm, cm), _, _ = _fit_guides(
            (mm, cm), data, pset, config, jax.random.fold_in(key, done), config.online_steps
        )
    return s


def _evaluate_problem(problem, runner, pset, config, key, step, mode, noise, plan):
    """GP and GESR (and, in the ablation, the online variants) on one problem: every method
    from the same seeds, i.e. the same initial populations."""
    x, y, xt, yt = _data(problem, config, step, noise)
    keys = jax.random.split(key, config.seeds)
    truth = problem.sympy()
    out = {}
    for method, fn in plan.items():
        t0 = time.process_time()  # CPU seconds: comparable on a shared machine
        s = jax.block_until_ready(fn(x, y, keys))
        secs = (time.process_time() - t0) / config.seeds
        out[method] = _rows(s, secs, x, y, xt, yt, pset, truth, config)
    return out


def _solve_case(problem, runner, config, key, step):
    """Evaluations to solution, GP vs GESR: `solve_seeds` runs per method from the same
    initial populations, each up to `solve_generations` generations; the engine records the
    evaluations spent when the best train 1-R^2 first reached the target (-1: never). The
    seeds run in vmapped chunks of `config.seeds` (the compiled shape of every other case),
    timed after a zero-generation warm-up call so that compilation is not counted."""
    x, y, _, _ = _data(problem, config, step, 0.0)
    n, chunk = config.solve_seeds, config.seeds
    keys = jax.random.split(key, -(-n // chunk) * chunk).reshape(-1, chunk)
    jax.block_until_ready(runner.resume(runner.init(x, y, keys[0]), x, y, 0, True))
    out = {}
    for method in ("GP", "GESR"):
        t0 = time.process_time()
        states = [runner.run(method == "GESR", x, y, k, config.solve_generations) for k in keys]
        states = jax.block_until_ready(states)
        out[method] = {
            "solved_at": np.concatenate([np.asarray(s.solved_at) for s in states])[:n].tolist(),
            "evals_spent": np.concatenate([np.asarray(s.evaluations) for s in states])[:n].tolist(),
            "seconds": (time.process_time() - t0) / (len(keys) * chunk),
        }
    return out


def _log(logger, step, name, out, case):
    for method, res in out.items():
        rr = res["rows"]
        logger.log(
            step,
            case=case,
            problem=name,
            method=method,
            seconds=float(np.median([r["seconds"] for r in rr])),
            success=float(np.mean([r["solved"] for r in rr])),
            median_evals=float(np.median([r["evals"] for r in rr])),
            median_r2=float(np.median([r["r2"] for r in rr])),
        )


def _launch_baselines(workdir, config, problems, budget):
    """gplearn and Operon on every problem and case, in a second process started before any
    JAX work (evaluation-budget jobs first: the wall-clock jobs calibrate on them)."""
    out = workdir / "baselines.json"
    if out.exists() or not config.baselines:
        return None, out
    jobs = []
    for mode, noise in sorted(_cases(config), key=lambda c: c[0] != "evals"):
        for p in problems:
            if noise > 0 and p.name not in (config.noise_problems or config.problems):
                continue
            x, y, xt, _ = _data(p, config, config.problems.index(p.name), noise)
            for method in [m for m in config.baselines if noise in config.baseline_noise[m]]:
                for i in range(config.baseline_seeds[method]):
                    jobs.append(
                        {"problem": p.name, "method": method, "seed": config.seed + i}
                        | {"mode": mode, "noise": noise}
                        | {"x": x.tolist(), "y": y.tolist(), "xt": xt.tolist()}
                    )
    keys = ("population_size", "tournament_size", "parsimony", "target_nmse", "max_len")
    settings = {k: config[k] for k in keys}
    settings.update(operators=list(config.operators), budget=budget, seconds=config.time_budget)
    return gesr_baselines.launch(jobs, settings, out), out


def _collect_baselines(proc, out, config, problems, results, logger):
    if proc is not None and proc.wait() != 0:
        raise RuntimeError(f"baseline process failed with exit code {proc.returncode}")
    fits = json.loads(out.read_text()) if out.exists() else []
    for mode, noise in _cases(config):
        case = case_name(mode, noise)
        here = [p for p in problems if p.name in results[case]]
        for p in xplib.progress(here, desc=f"baselines (sympy, {case})"):
            step = config.problems.index(p.name)
            _, y, _, yt = _data(p, config, step, noise)
            truth, got = p.sympy(), {}
            for f in fits:
                if (f["problem"], f["mode"], f["noise"]) != (p.name, mode, noise):
                    continue
                row = _row(
                    np.asarray(f["train_pred"]),
                    np.asarray(f["test_pred"]),
                    y.astype(np.float64),
                    yt.astype(np.float64),
                    f["evals"],
                    f["evals"],
                    f["seconds"],
                    lambda f=f, nv=p.n_vars: gesr_baselines.to_sympy(f["method"], f["expr"], nv),
                    truth,
                    config,
                )
                got.setdefault(f["method"], {"rows": []})["rows"].append(row)
            results[case][p.name].update(got)
            _log(logger, step, p.name, got, case)


def _n_train(problem, config):
    """Training points: the benchmark's own number, capped by `config.max_train`."""
    return min(problem.n_train, config.max_train or problem.n_train)


def _groups(problems, config):
    """Problems grouped by (variables, training points), in order of first appearance."""
    groups: dict[tuple[int, int], list] = {}
    for p in problems:
        groups.setdefault((p.n_vars, _n_train(p, config)), []).append(p)
    return groups


def _seconds_per_generation(runner, x, config):
    """Per-seed CPU seconds of one generation of GP and of GESR (seeds vmapped, compiled, on
    a random target that is never solved; median of 3 interleaved repeats). The evaluator's
    cost does not depend on the expressions, so one measurement per group and method sets
    its generation count under the time budget."""
    y = np.random.default_rng(1).normal(size=len(x)).astype(np.float32)
    keys = jax.random.split(jax.random.key(config.seed + 99), config.seeds)
    g = config.calibration_generations
    s = jax.block_until_ready(runner.init(x, y, keys))
    times = {"GP": [], "GESR": []}
    for _ in range(3):
        for m in times:
            t0 = time.process_time()
            jax.block_until_ready(runner.resume(s, x, y, g, m == "GESR"))
            times[m].append((time.process_time() - t0) / g / config.seeds)
    return {m: float(np.median(t)) for m, t in times.items()}


def _plans(runner, pset, config, key, gens):
    """Method name -> fn(x, y, keys) -> final state, per budget mode."""

    def fixed(guided, g):
        return lambda x, y, keys: runner.run(guided, x, y, keys, g)

    plans = {
        "evals": {"GP": fixed(False, config.generations), "GESR": fixed(True, config.generations)},
        "time": {"GP": fixed(False, gens["GP"]), "GESR": fixed(True, gens["GESR"])},
    }
    fresh = (  # random weights, same structure as the pre-trained pair
        sr.MutationModel(pset, **_model_kw(config), rngs=nnx.Rngs(config.seed + 2)),
        sr.CrossoverModel(pset, **_model_kw(config), rngs=nnx.Rngs(config.seed + 3)),
    )
    pre = (nnx.merge(runner.mgd, runner.mst), nnx.merge(runner.cgd, runner.cst))
    plans["ablation"] = {
        "GESR online": lambda x, y, keys: _online(runner, x, y, keys, fresh, pset, config, key),
        "GESR offline+online": lambda x, y, keys: _online(
            runner, x, y, keys, pre, pset, config, key
        ),
    }
    return plans


def _model_kw(config):
    return dict(dim=config.model_dim, depth=config.model_depth, heads=config.model_heads)


def train_and_evaluate(config, workdir):
    workdir = pathlib.Path(workdir)
    logger = xplib.MetricLogger(workdir)
    key = jax.random.key(config.seed)
    gp_cfg = gp_config(config)
    budget = gesr_baselines.budget_of(gp_cfg, config.generations)
    problems = [ALL[name] for name in config.problems]
    proc, baselines_path = _launch_baselines(workdir, config, problems, budget)
    partial_path = workdir / "per_problem.json"
    results = json.loads(partial_path.read_text()) if partial_path.exists() else {}
    for mode, noise in _cases(config):
        results.setdefault(case_name(mode, noise), {})
    results.setdefault("ablation", {})
    results.setdefault("to_solution", {})
    guides_info, time_plan = {}, {}
    extra = [ALL[n] for n in config.solve_problems if n not in config.problems]
    for (nv, n_train), group in _groups(problems + extra, config).items():
        tag = f"nv{nv}_n{n_train}"
        ranges = [
            (min(p.ranges[j][0] for p in group), max(p.ranges[j][1] for p in group))
            for j in range(nv)
        ]
        pset = sr.PrimitiveSet(tuple(config.operators), nv, config.max_len)
        mm = sr.MutationModel(pset, **_model_kw(config), rngs=nnx.Rngs(config.seed))
        cm = sr.CrossoverModel(pset, **_model_kw(config), rngs=nnx.Rngs(config.seed + 1))
        runner = _Runner(pset, gp_cfg, mm, cm)
        mm, cm, info = _guides(
            workdir,
            tag,
            pset,
            ranges,
            n_train,
            config,
            runner,
            (mm, cm),
            jax.random.fold_in(key, nv),
        )
        info.setdefault("seconds", float("nan"))  # restored without its record
        guides_info[tag] = info
        runner.mst, runner.cst = nnx.state(mm), nnx.state(cm)
        x0 = _sample_x(ranges, n_train, np.random.default_rng(0))
        per_gen = _seconds_per_generation(runner, x0, config)
        gens = {m: max(1, round(config.time_budget / t)) for m, t in per_gen.items()}
        time_plan[tag] = {"seconds_per_generation": per_gen, "generations": gens}
        plans = _plans(runner, pset, config, jax.random.fold_in(key, 5000 + nv), gens)
        solve = [p for p in group if p.name in config.solve_problems]
        for p in xplib.progress(
            [p for p in solve if p.name not in results["to_solution"]], desc=f"to solution ({tag})"
        ):
            step = 100 + config.solve_problems.index(p.name)
            got = _solve_case(p, runner, config, jax.random.fold_in(key, 1000 + step), step)
            results["to_solution"][p.name] = got
            logger.log(
                step,
                case="to_solution",
                problem=p.name,
                **{
                    f"solved_{m}": float(np.mean(np.asarray(r["solved_at"]) >= 0))
                    for m, r in got.items()
                },
            )
            partial_path.write_text(json.dumps(results))
        todo = [(mode, noise) for mode, noise in _cases(config)] + [("ablation", 0.0)]
        for mode, noise in todo:
            case = "ablation" if mode == "ablation" else case_name(mode, noise)
            names = {"ablation": config.ablation_problems}.get(mode, config.problems)
            if mode != "ablation" and noise > 0:
                names = config.noise_problems or config.problems
            left = [p for p in group if p.name in names and p.name not in results[case]]
            for p in xplib.progress(left, desc=f"{case} ({tag})"):
                step = config.problems.index(p.name)
                results[case][p.name] = _evaluate_problem(
                    p,
                    runner,
                    pset,
                    config,
                    jax.random.fold_in(key, 1000 + step),
                    step,
                    mode,
                    noise,
                    plans[mode],
                )
                _log(logger, step, p.name, results[case][p.name], case)
                partial_path.write_text(json.dumps(results))
    _collect_baselines(proc, baselines_path, config, problems, results, logger)
    report(workdir, config, problems, results, guides_info, budget, time_plan)
