"""The main job in smoke mode: every registered experiment runs and the report is complete."""

import json
import pathlib
import subprocess
import sys

from xplib import _registry

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_reproduce_smoke_writes_a_complete_report(tmp_path):
    proc = subprocess.run(
        [sys.executable, "experiments/reproduce.py", "--smoke", f"--out={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    (report_dir,) = list(tmp_path.iterdir())
    report = (report_dir / "REPORT.md").read_text()
    assert proc.returncode == 0, proc.stdout + proc.stderr + report
    summary = json.loads((report_dir / "summary.json").read_text())
    registered = _registry.discover()
    assert [s["name"] for s in summary] == [e.name for e in registered]
    if not registered:
        assert "No experiments are registered yet" in report
    for exp in registered:
        assert f"## {exp.paper}" in report
        results = json.loads((report_dir / exp.name / "results.json").read_text())
        assert results["claims"], exp.name
        assert results["figures"], f"{exp.name}: the report needs at least one figure"
        for fig in results["figures"]:
            assert (report_dir / exp.name / fig).stat().st_size > 0


def test_only_rejects_unknown_names(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "experiments/reproduce.py",
            "--only=no_such_experiment",
            f"--out={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "no_such_experiment" in proc.stderr
