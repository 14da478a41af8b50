"""Tables, paired statistics, the figure and results.json of the GESR experiment."""

import math

import matplotlib.pyplot as plt
import numpy as np

import xplib

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


def report(workdir, config, problems, results, guides_info, budget):
    names = [p.name for p in problems]
    methods = [m for m in ("GESR", "GP", *config.baselines) if m in results[names[0]]]
    rate = {m: float(np.mean(_vals(results, names, m, "solved"))) for m in methods}
    med = {m: float(np.median(_vals(results, names, m, "evals"))) for m in methods}
    acc = {m: float(np.mean(_vals(results, names, m, "accurate"))) for m in methods}
    sym = {m: float(np.mean(_vals(results, names, m, "symbolic"))) for m in methods}
    secs = {m: float(np.median(_vals(results, names, m, "seconds"))) for m in methods}
    pr = paired(results, names)
    same = "plain GP, same engine and seeds"
    claims = [
        xplib.Claim(
            "GESR needs fewer evaluations to reach train 1-R^2 <= 1e-6",
            f"median evaluations to solution (unsolved = budget {budget})",
            med["GESR"],
            med["GP"],
            ABSTRACT,
            same,
            "lower",
        ),
        xplib.Claim(
            "GESR solves more runs within the same budget",
            "success rate (train 1-R^2 <= 1e-6)",
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
            "test R^2 > 0.999 rate",
            acc["GESR"],
            acc["GP"],
            "SRBench ground truth: gplearn 30.0%, Operon 86.9%",
            same,
            "higher",
        ),
        xplib.Claim(
            "exact symbolic recovery (SRBench)",
            "sympy difference/ratio is constant",
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
                "test R^2 > 0.999 rate",
                acc["GESR"],
                acc[m],
                f"SRBench ground truth: {m} "
                + ("30.0%" if m == "gplearn" else "86.9%")
                + " (at SRBench's 500k-evaluation budget)",
                m,
                "higher",
            )
        )
    overall = xplib.Table(
        f"Overall, {len(names)} problems (median [IQR] over problems x seeds; rates with 95% "
        f"Wilson intervals); evaluation budget {budget} per run",
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
                len(_vals(results, names, m, "solved")),
                _wilson(
                    int(_vals(results, names, m, "solved").sum()),
                    len(_vals(results, names, m, "solved")),
                ),
                _iqr(_vals(results, names, m, "evals")),
                _iqr(_vals(results, names, m, "r2")),
                _wilson(
                    int(_vals(results, names, m, "accurate").sum()),
                    len(_vals(results, names, m, "accurate")),
                ),
                sym[m],
                _iqr(_vals(results, names, m, "size")[_vals(results, names, m, "size") >= 0])
                if np.any(_vals(results, names, m, "size") >= 0)
                else "-",
                secs[m],
            ]
            for m in methods
        ],
    )
    pair_table = xplib.Table(
        f"GESR vs GP paired by (problem, seed): same initial population, {pr['pairs']} pairs; "
        "exact two-sided sign tests, ties dropped",
        ["comparison", "GESR better", "GP better", "p"],
        [
            ["evaluations to solution", pr["fewer_evals"], pr["more_evals"], pr["p_evals"]],
            ["solved (discordant pairs)", pr["solved_only_a"], pr["solved_only_b"], pr["p_solved"]],
            ["test R2", pr["r2_a_better"], pr["r2_b_better"], pr["p_r2"]],
            ["median log10(evals GESR / GP)", pr["median_log10_eval_ratio"], "", ""],
        ],
    )
    rows = []
    for n in names:
        row = [n]
        for m in methods:
            rr = results[n][m]["rows"]
            row += [
                f"{sum(r['solved'] for r in rr)}/{len(rr)}",
                float(np.median([r["r2"] for r in rr])),
            ]
        rows.append(row)
    cols = ["problem"] + [f"{m} {c}" for m in methods for c in ("solved", "median test R2")]
    per_problem = xplib.Table("Per problem", cols, rows)
    pre = xplib.Table(
        "Offline pre-training of the two BERTs per problem group (improving edits from plain "
        "GP on random target expressions)",
        [
            "group",
            "mutation rows",
            "crossover rows",
            "final mutation loss",
            "final crossover loss",
            "seconds",
        ],
        [
            [
                g,
                i["rows_mutation"],
                i["rows_crossover"],
                (i["loss_mutation"] or [float("nan")])[-1],
                (i["loss_crossover"] or [float("nan")])[-1],
                i["seconds"],
            ]
            for g, i in guides_info.items()
        ],
    )
    fig = _figure(results, names, methods, guides_info, budget)
    fig_name = xplib.save_figure(fig, workdir, "gesr_evals")
    notes = (
        f"Budget per run: {config.generations} generations x population {config.population_size} "
        f"= {budget} evaluations (initial population, every edited child, every constant-"
        "optimisation step; copies are free). GP and GESR share one compiled engine and the "
        "seeds (GESR only replaces the uniform choice of the point-mutation gene and of the "
        "crossover points by the two pre-trained BERTs; their timing excludes compilation and "
        f"is per run with {config.seeds} seeds vmapped). gplearn runs round(budget / "
        "population) generations (it evaluates every program each generation) and stops at the "
        "same target; Operon gets max_evaluations = budget and, having no target stop, always "
        "spends it. All four use the same operators, population, tournament size and data; "
        f"seeds: GP/GESR {config.seeds}, "
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
        tables=[overall, pair_table, per_problem, pre],
        figures=[fig_name],
        notes=notes,
        extra={"per_problem": results, "budget": budget, "paired": pr},
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
