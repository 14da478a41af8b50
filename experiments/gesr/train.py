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
from gesr_report import report

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
    """Seed-vmapped init and run of one engine whose guides are switched at run time."""

    def __init__(self, pset, gp_cfg, mm, cm):
        mgd, self.mst = nnx.split(mm)
        cgd, self.cst = nnx.split(cm)
        eng = sr.make_engine(pset, gp_cfg, mgd, cgd)

        def init_and_run(x, y, k, m, c, on, g):
            return eng.run(eng.init(x, y, key=k), x, y, (m, c, on), g)

        axes = (None, None, 0, None, None, None, None)
        self._run = jax.jit(jax.vmap(init_and_run, axes))  # one executable for everything

    def run(self, guided, x, y, keys, generations):
        """Fresh populations from `keys` (vmapped), evolved for `generations`."""
        return self._run(x, y, keys, self.mst, self.cst, bool(guided), generations)


def _sample_x(ranges, n, rng):
    lo, hi = np.array([r[0] for r in ranges]), np.array([r[1] for r in ranges])
    return rng.uniform(lo, hi, (n, len(ranges))).astype(np.float32)


def _pretrain_data(runner, pset, ranges, n_train, config, key):
    """Improving edits recorded by plain GP on random target expressions (drawn in one call,
    filtered on the host: finite, not constant, at least 4 nodes)."""
    x = _sample_x(ranges, n_train, np.random.default_rng(config.seed))
    k_trees, k_runs = jax.random.split(key)
    draw = jax.jit(sr.random_trees, static_argnums=(1, 2), static_argnames=("max_depth",))
    toks, consts = map(np.asarray, draw(k_trees, pset, 8 * config.pretrain_problems, max_depth=3))
    bufs, made = [], 0
    for i in xplib.progress(range(len(toks)), desc="pretrain data"):
        if made == config.pretrain_problems:
            break
        y = sr.evaluate_reference(toks[i], consts[i], x, pset)
        if not np.all(np.isfinite(y)) or np.std(y) < 1e-3 or (toks[i] != pset.pad).sum() < 4:
            continue
        keys = jax.random.split(jax.random.fold_in(k_runs, i), config.seeds)
        s = runner.run(False, x, y.astype(np.float32), keys, config.pretrain_generations)
        buf = jax.tree.map(np.asarray, s.buffer)  # index on the host: no per-seed dispatch
        bufs += [jax.tree.map(lambda a, j=j: a[j], buf) for j in range(config.seeds)]
        made += 1
    return sr.merge_buffers(bufs)


def _guides(workdir, tag, pset, ranges, n_train, config, runner, models, key):
    """Pre-trained (mutation, crossover) models: restored from the checkpoint or trained."""
    mm, cm = models
    t0 = time.perf_counter()
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
    data = _pretrain_data(runner, pset, ranges, n_train, config, key)
    km, kc = jax.random.split(jax.random.fold_in(key, 7))
    models = {"mutation": mm, "crossover": cm}
    for name, loss, fields, k in (
        ("mutation", sr.mutation_loss, sr.mutation_data(data), km),
        ("crossover", sr.crossover_loss, sr.crossover_data(data), kc),
    ):
        info[f"rows_{name}"] = len(next(iter(fields.values())))
        if info[f"rows_{name}"]:
            res = sr.train_model(
                models[name], loss, fields, pset, key=k, steps=config.pretrain_steps
            )
            models[name], info[f"loss_{name}"] = res.model, res.losses.tolist()
    mngr.save(1, args=ocp.args.StandardSave({k: nnx.state(m) for k, m in models.items()}))
    mngr.wait_until_finished()
    info["seconds"] = time.perf_counter() - t0
    info_path.write_text(json.dumps(info))
    return models["mutation"], models["crossover"], info


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


def _data(problem, config, step):
    """Train (with SRBench noise) and noise-free test samples; the same for every method."""
    rng = np.random.default_rng(config.seed + step)
    x, y = problem.sample(problem.n_train, rng, config.noise)
    xt, yt = problem.sample(config.n_test, rng)
    return x, y, xt, yt


def _evaluate_problem(problem, runner, pset, config, key, step):
    x, y, xt, yt = _data(problem, config, step)
    y64, yt64 = y.astype(np.float64), yt.astype(np.float64)
    keys = jax.random.split(key, config.seeds)
    truth = problem.sympy()
    out = {}
    for method, guided in (("GP", False), ("GESR", True)):
        t0 = time.perf_counter()
        s = jax.block_until_ready(runner.run(guided, x, y, keys, config.generations))
        secs = (time.perf_counter() - t0) / config.seeds
        s = jax.tree.map(np.asarray, s._replace(key=None))  # index on the host
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
        out[method] = {"rows": rows}
    return out


def _log(logger, step, name, out):
    for method, res in out.items():
        rr = res["rows"]
        logger.log(
            step,
            problem=name,
            method=method,
            seconds=float(np.median([r["seconds"] for r in rr])),
            success=float(np.mean([r["solved"] for r in rr])),
            median_evals=float(np.median([r["evals"] for r in rr])),
            median_r2=float(np.median([r["r2"] for r in rr])),
        )


def _launch_baselines(workdir, config, problems, budget):
    """gplearn and Operon on every problem, in a second process started before any JAX work."""
    out = workdir / "baselines.json"
    if out.exists() or not config.baselines:
        return None, out
    jobs = []
    for p in problems:
        x, y, xt, _ = _data(p, config, config.problems.index(p.name))
        for method in config.baselines:
            for i in range(config.baseline_seeds[method]):
                jobs.append(
                    {"problem": p.name, "method": method, "seed": config.seed + i}
                    | {"x": x.tolist(), "y": y.tolist(), "xt": xt.tolist()}
                )
    keys = ("population_size", "tournament_size", "parsimony", "target_nmse", "max_len")
    settings = {k: config[k] for k in keys}
    settings.update(operators=list(config.operators), budget=budget)
    return gesr_baselines.launch(jobs, settings, out), out


def _collect_baselines(proc, out, config, problems, results, logger):
    if proc is not None and proc.wait() != 0:
        raise RuntimeError(f"baseline process failed with exit code {proc.returncode}")
    fits = json.loads(out.read_text()) if out.exists() else []
    for p in xplib.progress(problems, desc="baselines (sympy)"):
        step = config.problems.index(p.name)
        _, y, _, yt = _data(p, config, step)
        truth, got = p.sympy(), {}
        for f in (f for f in fits if f["problem"] == p.name):
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
        results[p.name].update(got)
        _log(logger, step, p.name, got)


def _groups(problems):
    """Problems grouped by (variables, training points), in order of first appearance."""
    groups: dict[tuple[int, int], list] = {}
    for p in problems:
        groups.setdefault((p.n_vars, p.n_train), []).append(p)
    return groups


def train_and_evaluate(config, workdir):
    workdir = pathlib.Path(workdir)
    logger = xplib.MetricLogger(workdir)
    key = jax.random.key(config.seed)
    gp_cfg = sr.GPConfig(
        population_size=config.population_size,
        tournament_size=config.tournament_size,
        parsimony=config.parsimony,
        target_nmse=config.target_nmse,
        const_every=config.const_every,
        temperature=config.temperature,
    )
    budget = gesr_baselines.budget_of(gp_cfg, config.generations)
    problems = [ALL[name] for name in config.problems]
    proc, baselines_path = _launch_baselines(workdir, config, problems, budget)
    partial_path = workdir / "per_problem.json"
    results = json.loads(partial_path.read_text()) if partial_path.exists() else {}
    guides_info = {}
    for (nv, n_train), group in _groups(problems).items():
        tag = f"nv{nv}_n{n_train}"
        ranges = [
            (min(p.ranges[j][0] for p in group), max(p.ranges[j][1] for p in group))
            for j in range(nv)
        ]
        pset = sr.PrimitiveSet(tuple(config.operators), nv, config.max_len)
        kw = dict(dim=config.model_dim, depth=config.model_depth, heads=config.model_heads)
        mm = sr.MutationModel(pset, **kw, rngs=nnx.Rngs(config.seed))
        cm = sr.CrossoverModel(pset, **kw, rngs=nnx.Rngs(config.seed + 1))
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
        todo = [p for p in group if p.name not in results]
        if todo:  # compile (or reuse) outside the clock
            x0, y0 = todo[0].sample(n_train, np.random.default_rng(0))
            jax.block_until_ready(runner.run(True, x0, y0, jax.random.split(key, config.seeds), 1))
        for p in xplib.progress(todo, desc=f"problems ({tag})"):
            step = config.problems.index(p.name)
            results[p.name] = _evaluate_problem(
                p, runner, pset, config, jax.random.fold_in(key, 1000 + step), step
            )
            _log(logger, step, p.name, results[p.name])
            partial_path.write_text(json.dumps(results))
    _collect_baselines(proc, baselines_path, config, problems, results, logger)
    report(workdir, config, problems, results, guides_info, budget)
