"""Tables, paired statistics, the figure and results.json of the GESR experiment."""

import math

import matplotlib.pyplot as plt
import numpy as np

import xplib


def case_name(mode, noise):
    return f"{mode}, noise {noise:g}"


PAPER = "GESR (arXiv 2605.10685)"
ABSTRACT = (
    "abstract: GESR 'significantly improves computational efficiency compared with "
    "traditional GP' (no number public)"
)


def _vals(results, names, method, field):
    return np.asarray([r[field] for n in names for r in results[n][method]["rows"]], np.float64)


def _iqr(v):
    q1, q2, q3 = np.percentile(v, [25, 50, 75])
    return f"{q2:.4g} [{q1:.4g}, {q3:.4g}]"


def _wilson(k: int, n: int) -> str:
    """Rate with its 95 % Wilson interval."""
    if n == 0:
        return "-"
    p, z = k / n, 1.96
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{p:.3f} [{max(0.0, mid - half):.3f}, {min(1.0, mid + half):.3f}]"


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test (ties dropped): P(as unbalanced | no difference)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def censored_pairs(a, b):
    """Paired evaluations to solution with censoring: ``a``, ``b`` hold each run's evaluations
    at solution or -1 (unsolved within the budget, i.e. more than the budget). ``a`` is
    better in a pair when it solved and ``b`` did not, or both solved and ``a`` needed fewer;
    pairs unsolved by both (or equal) are ties. Exact two-sided sign test on the rest."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = np.where(a < 0, np.inf, a), np.where(b < 0, np.inf, b)
    fewer, more = int(np.sum(a < b)), int(np.sum(a > b))
    return {
        "pairs": len(a),
        "fewer": fewer,
        "more": more,
        "ties": len(a) - fewer - more,
        "p": sign_test(fewer, more),
    }


def paired(results, names, a="GESR", b="GP"):
    """Per (problem, seed) pair, both methods from the same initial population."""
    ea, eb = _vals(results, names, a, "evals"), _vals(results, names, b, "evals")
    sa, sb = _vals(results, names, a, "solved"), _vals(results, names, b, "solved")
    ra, rb = _vals(results, names, a, "r2"), _vals(results, names, b, "r2")
    fewer, more = int(np.sum(ea < eb)), int(np.sum(ea > eb))
    only_a, only_b = int(np.sum((sa > 0) & (sb == 0))), int(np.sum((sb > 0) & (sa == 0)))
    ra_better, rb_better = int(np.sum(ra > rb)), int(np.sum(rb > ra))
    return {
        "pairs": len(ea),
        "fewer_evals": fewer,
        "more_evals": more,
        "p_evals": sign_test(fewer, more),
        "solved_only_a": only_a,
        "solved_only_b": only_b,
        "p_solved": sign_test(only_a, only_b),
        "r2_a_better": ra_better,
        "r2_b_better": rb_better,
        "p_r2": sign_test(ra_better, rb_better),
        "median_log10_eval_ratio": float(np.median(np.log10(ea / eb))),
    }


def _solve_times(tos, names, method):
    """Evaluations to solution of every run (problem-major), +inf where unsolved."""
    v = np.concatenate([np.asarray(tos[n][method]["solved_at"], np.float64) for n in names])
    return np.where(v < 0, np.inf, v)


def _solve_seconds(tos, names, method):
    """CPU seconds to solution of every run (+inf where unsolved): its evaluations to
    solution times the method's CPU seconds per evaluation on that problem (the seeds run
    vmapped, so this is the amortised cost, model inference included), and the CPU seconds
    of a whole run at the budget."""
    out, full = [], []
    for n in names:
        r = tos[n][method]
        per_eval = r["seconds"] / max(float(np.mean(r["evals_spent"])), 1.0)
        v = np.asarray(r["solved_at"], np.float64)
        out.append(np.where(v < 0, np.inf, v * per_eval))
        full.append(per_eval * float(np.max(r["evals_spent"])))
    return np.concatenate(out), float(np.max(full))


def _censored_seconds(v, at_budget):
    if np.mean(np.isfinite(v)) < 0.5:
        return f"> {at_budget:.3g}"
    return f"{np.median(v):.3g}"


def _censored_median(v, budget):
    """The median of evaluations to solution where more than half the runs solved (the
    empirical CDF reaches 0.5), else '> budget'."""
    if np.mean(np.isfinite(v)) < 0.5:
        return f"> {budget}"
    return f"{np.median(v):.0f}"


def _to_solution(results, config):
    """Tables, claims and the solve-rate curves of the evaluations-to-solution case."""
    tos = results.get("to_solution") or {}
    names = [n for n in config.solve_problems if n in tos]
    if not names:
        return [], [], None
    budget = int(max(max(tos[n][m]["evals_spent"]) for n in names for m in ("GP", "GESR")))
    v = {m: _solve_times(tos, names, m) for m in ("GESR", "GP")}
    pr = censored_pairs(
        np.where(np.isfinite(v["GESR"]), v["GESR"], -1), np.where(np.isfinite(v["GP"]), v["GP"], -1)
    )
    fr = (0.25, 0.5, 1.0)
    rows = []
    for m in ("GESR", "GP"):
        n = len(v[m])
        rows.append(
            [m, n]
            + [_wilson(int(np.sum(v[m] <= f * budget)), n) for f in fr]
            + [
                _censored_median(v[m], budget),
                _censored_seconds(*_solve_seconds(tos, names, m)),
                float(np.mean([tos[k][m]["seconds"] for k in names])),
            ]
        )
    overall = xplib.Table(
        f"Evaluations to solution, GP vs GESR ({len(names)} problems x {config.solve_seeds} "
        f"seeds, up to {config.solve_generations} generations = {budget} evaluations per run, "
        "noise 0): fraction of runs solved (train 1-R^2 <= 1e-6) within a quarter, half and "
        "all of the budget (95% Wilson intervals) and the median evaluations to solution "
        "(unsolved runs count as more than the budget)",
        [
            "method",
            "runs",
            "solved by 1/4 budget",
            "solved by 1/2 budget",
            "solved by budget",
            "median evals to solution",
            "median CPU s to solution",
            "CPU s / run",
        ],
        rows,
    )
    per = []
    for n in names:
        a, b = _solve_times(tos, [n], "GESR"), _solve_times(tos, [n], "GP")
        q = censored_pairs(np.where(np.isfinite(a), a, -1), np.where(np.isfinite(b), b, -1))
        per.append(
            [
                n,
                f"{np.sum(np.isfinite(a))}/{len(a)}",
                _censored_median(a, budget),
                f"{np.sum(np.isfinite(b))}/{len(b)}",
                _censored_median(b, budget),
                q["fewer"],
                q["more"],
                q["ties"],
                q["p"],
            ]
        )
    per.append(
        [
            "all",
            f"{np.sum(np.isfinite(v['GESR']))}/{pr['pairs']}",
            _censored_median(v["GESR"], budget),
            f"{np.sum(np.isfinite(v['GP']))}/{pr['pairs']}",
            _censored_median(v["GP"], budget),
            pr["fewer"],
            pr["more"],
            pr["ties"],
            pr["p"],
        ]
    )
    paired_table = xplib.Table(
        "Evaluations to solution, paired by (problem, seed) from the same initial population "
        "(censored: a run that did not solve needed more than the budget; pairs that both "
        "left unsolved are ties); exact two-sided sign test",
        [
            "problem",
            "GESR solved",
            "GESR median evals",
            "GP solved",
            "GP median evals",
            "GESR fewer",
            "GESR more",
            "ties",
            "p",
        ],
        per,
    )
    claims = [
        xplib.Claim(
            "GESR needs fewer evaluations to reach the target than GP (paired, censored)",
            f"(problem, seed) pairs where GESR reached train 1-R^2 <= 1e-6 with fewer / more "
            f"evaluations than GP (unsolved = more than {budget}; sign test p={pr['p']:.3g}; "
            f"{pr['ties']} ties)",
            pr["fewer"],
            pr["more"],
            ABSTRACT,
            "pairs where GP needed fewer",
            "higher",
        ),
        xplib.Claim(
            "GESR solves more runs within the same evaluation budget (easy problems)",
            f"fraction of runs solved within {budget} evaluations",
            float(np.mean(np.isfinite(v["GESR"]))),
            float(np.mean(np.isfinite(v["GP"]))),
            ABSTRACT,
            "plain GP, same engine and seeds",
            "higher",
        ),
    ]
    return [overall, paired_table], claims, (v, budget, names)


def _solve_figure(curves):
    v, budget, names = curves
    fig, ax = plt.subplots(figsize=(6, 4))
    grid = np.linspace(0, budget, 400)
    for m, c in (("GESR", "C0"), ("GP", "C1")):
        ax.plot(grid, [np.mean(v[m] <= e) for e in grid], color=c, label=m, drawstyle="steps-post")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("fraction of runs solved (train 1-R^2 <= 1e-6)")
    ax.set_title(f"{', '.join(names)}: {len(v['GP'])} paired runs per method", fontsize=9)
    ax.legend()
    fig.tight_layout()
    return fig


def _case_row(res, names, m):
    solved = _vals(res, names, m, "solved")
    acc = _vals(res, names, m, "accurate")
    return [
        m,
        len(solved),
        _wilson(int(solved.sum()), len(solved)),
        _wilson(int(acc.sum()), len(acc)),
        float(np.mean(_vals(res, names, m, "symbolic"))),
        _iqr(_vals(res, names, m, "evals")),
        float(np.median(_vals(res, names, m, "seconds"))),
    ]


def report(workdir, config, problems, results, guides_info, budget, time_plan):
    names = [p.name for p in problems]
    main_case = case_name("evals", 0.0)
    res = results[main_case]
    methods = [m for m in ("GESR", "GP", *config.baselines) if m in res[names[0]]]
    rate = {m: float(np.mean(_vals(res, names, m, "solved"))) for m in methods}
    med = {m: float(np.median(_vals(res, names, m, "evals"))) for m in methods}
    acc = {m: float(np.mean(_vals(res, names, m, "accurate"))) for m in methods}
    sym = {m: float(np.mean(_vals(res, names, m, "symbolic"))) for m in methods}
    secs = {m: float(np.median(_vals(res, names, m, "seconds"))) for m in methods}
    pr = paired(res, names)
    same = "plain GP, same engine and seeds"
    solve_tables, solve_claims, curves = _to_solution(results, config)
    claims = solve_claims + [
        xplib.Claim(
            "GESR needs fewer evaluations to reach train 1-R^2 <= 1e-6",
            f"median evaluations to solution ({len(names)} problems; unsolved = budget "
            f"{budget}, i.e. censored; noise 0)",
            med["GESR"],
            med["GP"],
            ABSTRACT,
            same,
            "lower",
        ),
        xplib.Claim(
            "GESR solves more runs within the same budget",
            "success rate (train 1-R^2 <= 1e-6; noise 0)",
            rate["GESR"],
            rate["GP"],
            ABSTRACT,
            same,
            "higher",
        ),
        xplib.Claim(
            "paired: GESR reaches the target with fewer evaluations than GP from the same seed",
            f"pairs where GESR needed fewer / more evaluations (sign test p={pr['p_evals']:.3f})",
            pr["fewer_evals"],
            pr["more_evals"],
            ABSTRACT,
            "GP needed fewer",
            "higher",
        ),
        xplib.Claim(
            "accuracy solutions (SRBench)",
            "test R^2 > 0.999 rate (noise 0)",
            acc["GESR"],
            acc["GP"],
            "SRBench ground truth: gplearn 30.0%, Operon 86.9%",
            same,
            "higher",
        ),
        xplib.Claim(
            "exact symbolic recovery (SRBench)",
            "sympy difference/ratio is constant (noise 0)",
            sym["GESR"],
            sym["GP"],
            "SRBench ground truth: gplearn 15.5%, Operon 16.0%",
            same,
            "higher",
        ),
    ]
    for m in config.baselines:
        claims.append(
            xplib.Claim(
                f"GESR vs {m} (same evaluation budget)",
                "test R^2 > 0.999 rate (noise 0)",
                acc["GESR"],
                acc[m],
                f"SRBench ground truth: {m} "
                + ("30.0%" if m == "gplearn" else "86.9%")
                + " (at SRBench's 500k-evaluation budget)",
                m,
                "higher",
            )
        )
    time_case = case_name("time", 0.0)
    if time_case in results and results[time_case]:
        tres = results[time_case]
        for m in ("GP", *config.baselines):  # the time budget runs every problem
            if m in tres[names[0]]:
                claims.append(
                    xplib.Claim(
                        f"GESR vs {m} at the same time budget ({config.time_budget:g} CPU-s/run)",
                        "test R^2 > 0.999 rate (noise 0)",
                        float(np.mean(_vals(tres, names, "GESR", "accurate"))),
                        float(np.mean(_vals(tres, names, m, "accurate"))),
                        ABSTRACT,
                        m,
                        "higher",
                    )
                )
    cases_rows = []
    for case, cres in results.items():
        if case in ("ablation", "to_solution") or not cres:
            continue
        here = [n for n in names if n in cres]
        for m in methods:
            if m in cres[here[0]]:
                cases_rows.append([case, len(here)] + _case_row(cres, here, m))
    cases_table = xplib.Table(
        f"Every budget mode and SRBench noise level, {len(names)} problems (rates with 95% "
        f"Wilson intervals, evaluations median [IQR]); evaluation budget {budget} per run, "
        f"time budget {config.time_budget:g} CPU-s per run; seconds are CPU seconds",
        [
            "budget, noise",
            "problems",
            "method",
            "runs",
            "success rate",
            "R2>0.999 rate",
            "symbolic rate",
            "evals to solution",
            "seconds / run",
        ],
        cases_rows,
    )
    overall = xplib.Table(
        f"Evaluation budget, noise 0, {len(names)} problems (median [IQR] over problems x "
        f"seeds; rates with 95% Wilson intervals); evaluation budget {budget} per run",
        [
            "method",
            "runs",
            "success rate",
            "evals to solution",
            "test R2",
            "R2>0.999 rate",
            "symbolic rate",
            "size (sympy nodes)",
            "seconds / run",
        ],
        [
            [
                m,
                len(_vals(res, names, m, "solved")),
                _wilson(
                    int(_vals(res, names, m, "solved").sum()),
                    len(_vals(res, names, m, "solved")),
                ),
                _iqr(_vals(res, names, m, "evals")),
                _iqr(_vals(res, names, m, "r2")),
                _wilson(
                    int(_vals(res, names, m, "accurate").sum()),
                    len(_vals(res, names, m, "accurate")),
                ),
                sym[m],
                _iqr(_vals(res, names, m, "size")[_vals(res, names, m, "size") >= 0])
                if np.any(_vals(res, names, m, "size") >= 0)
                else "-",
                secs[m],
            ]
            for m in methods
        ],
    )
    pair_rows = []
    for case, cres in results.items():
        if case in ("ablation", "to_solution") or not cres:
            continue
        q = paired(cres, [n for n in names if n in cres])
        pair_rows += [
            [case, "evaluations to solution", q["fewer_evals"], q["more_evals"], q["p_evals"]],
            [case, "solved (discordant)", q["solved_only_a"], q["solved_only_b"], q["p_solved"]],
            [case, "test R2", q["r2_a_better"], q["r2_b_better"], q["p_r2"]],
        ]
    pair_table = xplib.Table(
        f"GESR vs GP paired by (problem, seed): same initial population, {pr['pairs']} pairs "
        "per case; exact two-sided sign tests, ties dropped",
        ["budget, noise", "comparison", "GESR better", "GP better", "p"],
        pair_rows,
    )
    rows = []
    for n in names:
        row = [n]
        for m in methods:
            rr = res[n][m]["rows"]
            row += [
                f"{sum(r['solved'] for r in rr)}/{len(rr)}",
                float(np.median([r["r2"] for r in rr])),
            ]
        rows.append(row)
    cols = ["problem"] + [f"{m} {c}" for m in methods for c in ("solved", "median test R2")]
    per_problem = xplib.Table("Per problem (evaluation budget, noise 0)", cols, rows)
    tables = solve_tables + [overall, cases_table, pair_table, per_problem]
    abl = _ablation(results, config, main_case)
    if abl is not None:
        tables.append(abl)
    tables.append(
        xplib.Table(
            "Time budget: measured CPU seconds per generation (per seed, seeds vmapped) and "
            "the generations that fit in the budget; BERT overhead = GESR / GP",
            [
                "group",
                "GP s/gen",
                "GESR s/gen",
                "GP gens/s",
                "GESR gens/s",
                "overhead",
                "GP gens",
                "GESR gens",
            ],
            [
                [
                    g,
                    t["seconds_per_generation"]["GP"],
                    t["seconds_per_generation"]["GESR"],
                    1 / t["seconds_per_generation"]["GP"],
                    1 / t["seconds_per_generation"]["GESR"],
                    t["seconds_per_generation"]["GESR"] / t["seconds_per_generation"]["GP"],
                    t["generations"]["GP"],
                    t["generations"]["GESR"],
                ]
                for g, t in time_plan.items()
            ],
        )
    )
    tables.append(
        xplib.Table(
            "Offline pre-training of the two BERTs per problem group (edits of plain GP on "
            f"random target expressions; variant: record={config.record!r}, weight sharpness "
            f"{config.weight_sharpness}); 'shipped' = pre-trained once by gesr_pretrain.py and "
            "restored (its CPU seconds are not part of this run)",
            [
                "group",
                "source",
                "random targets",
                "mutation rows",
                "crossover rows",
                "final mutation loss",
                "final crossover loss",
                "CPU seconds",
            ],
            [
                [
                    g,
                    i.get("shipped", "trained in this run"),
                    i.get("random_targets", config.pretrain_problems),
                    i["rows_mutation"],
                    i["rows_crossover"],
                    (i["loss_mutation"] or [float("nan")])[-1],
                    (i["loss_crossover"] or [float("nan")])[-1],
                    i.get("cpu_seconds", i["seconds"]),
                ]
                for g, i in guides_info.items()
            ],
        )
    )
    fig = _figure(res, names, methods, guides_info, budget)
    figures = [xplib.save_figure(fig, workdir, "gesr_evals")]
    if curves is not None:
        figures.insert(0, xplib.save_figure(_solve_figure(curves), workdir, "gesr_solve_curves"))
    notes = (
        f"Evaluation budget per run: {config.generations} generations x population "
        f"{config.population_size} = {budget} evaluations (initial population, every edited "
        "child, every constant-optimisation step; copies are free). Time budget: "
        f"{config.time_budget:g} CPU seconds per run (CPU, not wall, because the machine is "
        "shared; all four run single-process); each method gets the generations (GP, GESR, "
        "from their measured CPU seconds per generation, seeds vmapped) or evaluations "
        "(gplearn, Operon, from their own evaluation-budget runs) that its speed allows in "
        "that time; the CPU seconds actually spent are in the tables. GP and GESR share one "
        "compiled engine "
        "and the seeds (GESR only changes where the edits come from: "
        + (
            f"each crossover is the best of {config.screen} uniform candidate point pairs "
            f"by the crossover BERT ({config.guide_kind} scores), point mutations "
            + ("likewise" if config.screen_mutation else "uniform")
            if config.screen > 1
            else "point-mutation genes and crossover points sampled from the two BERTs"
        )
        + "; screened-out candidates are not evaluated; timing excludes compilation). gplearn "
        "runs round(budget / population) generations and stops at the same target; Operon "
        "gets max_evaluations and, having no target stop, always spends it. Same operators, "
        "population, tournament size and data for all four; noise: y + N(0, gamma RMS(y)) on "
        f"the training targets only; seeds: GP/GESR {config.seeds}, "
        + ", ".join(f"{m} {config.baseline_seeds[m]}" for m in config.baselines)
        + ". Size = nodes of the sympy expression. Symbolic recovery is checked for test "
        f"R^2 > 0.999 within {config.sympy_seconds} s."
    )
    xplib.write_results(
        workdir,
        experiment="gesr",
        paper=PAPER,
        preset=config.preset,
        claims=claims,
        tables=tables,
        figures=figures,
        notes=notes,
        extra={"per_problem": results, "budget": budget, "paired": pr, "time_plan": time_plan},
    )


def _ablation(results, config, main_case):
    """GP, offline-only GESR (main case) and the online variants on the ablation problems."""
    abl = results.get("ablation") or {}
    names = [n for n in config.ablation_problems if n in abl]
    if not names:
        return None
    merged = {n: dict(results[main_case][n]) | abl[n] for n in names}
    rows = []
    for m in ("GP", "GESR", "GESR online", "GESR offline+online"):
        q = paired(merged, names, m, "GP")
        r = _case_row(merged, names, m)
        label = {"GESR": "GESR offline (pre-trained only)"}.get(m, m)
        rows.append(
            [label] + r[1:] + [f"{q['fewer_evals']}/{q['more_evals']} (p={q['p_evals']:.2f})"]
        )
    return xplib.Table(
        f"Ablation: offline pre-training vs online fine-tuning (every {config.online_every} "
        f"generations, {config.online_steps} steps, seeds share the guides), evaluation budget, "
        f"noise 0, {len(names)} problems",
        [
            "guides",
            "runs",
            "success rate",
            "R2>0.999 rate",
            "symbolic rate",
            "evals to solution",
            "seconds / run",
            "fewer/more evals than GP (paired)",
        ],
        rows,
    )


def _figure(results, names, methods, guides_info, budget):
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    xs = np.arange(len(names))
    w = 0.8 / len(methods)
    for j, m in enumerate(methods):
        vals = [np.median([r["evals"] for r in results[n][m]["rows"]]) for n in names]
        axes[0].bar(xs + w * (j - (len(methods) - 1) / 2), vals, w, label=m)
    axes[0].axhline(budget, color="k", lw=0.8, ls="--", label="budget")
    axes[0].set_xticks(xs, names, rotation=45, ha="right", fontsize=7)
    axes[0].set_ylabel("median evaluations to solution")
    axes[0].legend(fontsize=7)
    data = [np.clip(1 - _vals(results, names, m, "r2"), 1e-12, 10) for m in methods]
    axes[1].boxplot(data, tick_labels=methods)
    axes[1].set_yscale("log")
    axes[1].axhline(1e-3, color="k", lw=0.8, ls="--")
    axes[1].set_ylabel("test 1 - R^2 (dashed: R^2 = 0.999)")
    for g, i in guides_info.items():
        for k in ("loss_mutation", "loss_crossover"):
            if i[k]:
                axes[2].plot(i[k], label=f"{k.split('_')[1]} ({g})")
    axes[2].set_xlabel("pre-training step")
    axes[2].set_ylabel("cross-entropy")
    if axes[2].lines:
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig
