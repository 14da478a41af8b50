"""The experiment convention: launch, checkpoint resume, results schema, discovery, report."""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from xplib import _registry, _report

HERE = pathlib.Path(__file__).parent
TOY = HERE / "toy_experiment"


def _run_toy(workdir, *overrides):
    cmd = [
        sys.executable,
        str(TOY / "main.py"),
        f"--config={TOY / 'config.py'}:smoke",
        f"--workdir={workdir}",
        *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    full = _run_toy(tmp_path / "full", "--config.steps=10")
    assert full.returncode == 0, full.stderr
    first = _run_toy(tmp_path / "split", "--config.steps=4")
    assert first.returncode == 0, first.stderr
    second = _run_toy(tmp_path / "split", "--config.steps=10")
    assert second.returncode == 0, second.stderr
    res = json.loads((tmp_path / "split" / "results.json").read_text())
    assert res["extra"]["resumed_from"] == 4
    np.testing.assert_array_equal(
        np.load(tmp_path / "split" / "w.npy"), np.load(tmp_path / "full" / "w.npy")
    )
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, 11))
    assert (tmp_path / "split" / "loss.png").is_file()


def test_bad_preset_is_named(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(TOY / "main.py"),
            f"--config={TOY / 'config.py'}:huge",
            f"--workdir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "preset" in proc.stderr


def test_discovery_and_report_record_failures(tmp_path):
    root = tmp_path / "experiments"
    for name in ("a_ok", "b_fails"):
        shutil.copytree(TOY, root / name)
    (root / "b_fails" / "config.py").write_text(
        (TOY / "config.py").read_text().replace("c.fail = False", "c.fail = True")
    )
    (root / "not_an_experiment").mkdir()
    found = _registry.discover(root)
    assert [e.name for e in found] == ["a_ok", "b_fails"]
    sys.path.insert(0, str(_registry.EXPERIMENTS_DIR))
    import reproduce  # experiments/reproduce.py; importing only defines its absl flags

    runs = [reproduce.run_one(e, "smoke", tmp_path / "out" / e.name, timeout=300) for e in found]
    assert [r["status"] for r in runs] == ["ok", "failed"]
    assert "toy experiment asked to fail" in runs[1]["error"]
    _report.write_report(tmp_path / "out", runs, ["header"])
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "GD reaches the least-squares loss" in report and "failed" in report
    assert "![loss.png](a_ok/loss.png)" in report
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["status"] for s in summary] == ["ok", "failed"]


def test_missing_paper_is_a_clear_error(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "main.py").write_text("")
    (tmp_path / "x" / "config.py").write_text("def get_config(arg=None): ...\n")
    with pytest.raises(ValueError, match="PAPER"):
        _registry.discover(tmp_path)


def test_write_results_rejects_missing_claims_and_figures(tmp_path):
    import xplib

    with pytest.raises(ValueError, match="claims"):
        xplib.write_results(tmp_path, experiment="e", paper="p", preset="smoke", claims=[])
    claim = xplib.Claim("c", "m", 1.0, 2.0, "3")
    with pytest.raises(ValueError, match="figures"):
        xplib.write_results(
            tmp_path,
            experiment="e",
            paper="p",
            preset="smoke",
            claims=[claim],
            figures=["nope.png"],
        )
