"""The main job: run every registered paper experiment and write one report.

    python experiments/reproduce.py                 # `small` presets (CPU-scale reproduction)
    python experiments/reproduce.py --smoke         # `smoke` presets (seconds each; CI runs this)
    python experiments/reproduce.py --only=chon,edgc

Each experiment runs in its own process so a crash or a timeout in one is recorded and the
rest still run. Output: reports/<timestamp>-<preset>/{REPORT.md, summary.json, <experiment>/...}.
"""

import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

from absl import app, flags

from xplib import _registry, _report

FLAGS = flags.FLAGS
flags.DEFINE_bool("smoke", False, "Run `smoke` presets instead of `small`.")
flags.DEFINE_string("preset", None, "Preset to run (overrides --smoke): smoke, small or full.")
flags.DEFINE_list("only", [], "Run only these experiments (folder names).")
flags.DEFINE_string("out", "reports", "Parent directory for the timestamped report folder.")
flags.DEFINE_integer(
    "timeout", 3600, "Seconds before one experiment is stopped and recorded as failed."
)


def run_one(exp: _registry.Experiment, preset: str, workdir: pathlib.Path, timeout: int) -> dict:
    cmd = [sys.executable, str(exp.main), f"--config={exp.config}:{preset}", f"--workdir={workdir}"]
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    run = {"name": exp.name, "paper": exp.paper, "preset": preset, "command": " ".join(cmd)}
    env = os.environ | {"MPLBACKEND": "Agg"}
    try:
        with (workdir / "log.txt").open("w") as log:
            proc = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, env=env
            )
        ok = proc.returncode == 0
        error = "" if ok else f"exit code {proc.returncode}"
    except subprocess.TimeoutExpired:
        ok, error = False, f"timed out after {timeout} s"
    run["seconds"] = time.time() - t0
    results_path = workdir / "results.json"
    if ok and not results_path.is_file():
        ok, error = False, "finished without writing results.json"
    if ok:
        run["status"], run["results"] = "ok", json.loads(results_path.read_text())
    else:
        tail = (workdir / "log.txt").read_text()[-4000:]
        run["status"], run["error"] = "failed", f"{error}\n{tail}"
    return run


def main(argv: list[str]) -> None:
    del argv
    preset = FLAGS.preset or ("smoke" if FLAGS.smoke else "small")
    experiments = _registry.discover()
    known = {e.name for e in experiments}
    unknown = set(FLAGS.only) - known
    if unknown:
        raise app.UsageError(
            f"--only: unknown experiments {sorted(unknown)}; known: {sorted(known)}"
        )
    if FLAGS.only:
        experiments = [e for e in experiments if e.name in FLAGS.only]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = pathlib.Path(FLAGS.out) / f"{stamp}-{preset}"
    out.mkdir(parents=True, exist_ok=True)
    if not experiments:
        print("reproduce: no experiments are registered yet (see WORKSPACE.md).")
    runs = []
    for exp in experiments:
        print(f"reproduce: {exp.name} ({preset}) ...", flush=True)
        run = run_one(exp, preset, out / exp.name, FLAGS.timeout)
        print(f"reproduce: {exp.name} {run['status']} in {run['seconds']:.0f} s", flush=True)
        runs.append(run)
    header = [
        f"Preset `{preset}`, started {stamp}, {len(runs)} experiments, "
        f"{sum(r['status'] == 'ok' for r in runs)} ok."
    ]
    _report.write_report(out, runs, header)
    print(f"reproduce: report written to {out / 'REPORT.md'}")
    failed = [r["name"] for r in runs if r["status"] != "ok"]
    if failed:
        print(f"reproduce: failed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
