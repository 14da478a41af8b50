"""Render REPORT.md and summary.json from each experiment's results.json (or its failure)."""

import json
import pathlib
from typing import Any


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def render_section(run: dict[str, Any]) -> list[str]:
    """One paper's section: status, claims (ours | baseline | paper), tables, figures."""
    lines = [
        f"## {run['paper']}",
        "",
        f"Experiment `{run['name']}`, preset `{run['preset']}`, "
        f"{run['seconds']:.0f} s, status **{run['status']}**.",
        "",
    ]
    if run["status"] != "ok":
        lines += ["```", run.get("error", "").strip()[-3000:], "```", ""]
        return lines
    res = run["results"]
    m = res.get("machine", {})
    lines += [
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
        f"jax {m.get('jax', '?')} on {m.get('backend', '?')}; date {res.get('date', '?')}.",
        "",
    ]
    rows = [
        [c["claim"], c["metric"], c["ours"], f"{c['baseline']} ({c['baseline_name']})", c["paper"]]
        for c in res["claims"]
    ]
    lines += _table(["claim", "metric", "ours", "baseline (same run)", "paper says"], rows) + [""]
    for t in res.get("tables", []):
        lines += [f"**{t['title']}**", ""] + _table(t["columns"], t["rows"]) + [""]
    for fig in res.get("figures", []):
        lines += [f"![{fig}]({run['name']}/{fig})", ""]
    if res.get("notes"):
        lines += [res["notes"], ""]
    return lines


def write_report(out: pathlib.Path, runs: list[dict[str, Any]], header: list[str]) -> None:
    lines = ["# Reproduction report", ""] + header + [""]
    if not runs:
        lines += [
            "No experiments are registered yet: add a folder under experiments/ with "
            "main.py and config.py (see WORKSPACE.md).",
            "",
        ]
    else:
        rows = [[r["name"], r["paper"], r["status"], f"{r['seconds']:.0f}"] for r in runs]
        lines += _table(["experiment", "paper", "status", "seconds"], rows) + [""]
    for run in runs:
        lines += render_section(run)
    (out / "REPORT.md").write_text("\n".join(lines))
    summary = [
        {k: v for k, v in r.items() if k != "results"}
        | {"claims": r.get("results", {}).get("claims", [])}
        for r in runs
    ]
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
