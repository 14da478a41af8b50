"""Two real processes (jax.distributed, gloo over loopback) run the compressed all-reduce."""

import json
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).parents[1] / "benchmarks" / "bench_multiprocess.py"


def test_two_processes_compressed_allreduce_matches_exact_mean(tmp_path):
    out = tmp_path / "mp.json"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--repeats", "1", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    res = json.loads(out.read_text())
    assert res["processes"] == 2
    rows = {r["compressor"]: r for r in res["rows"]}
    (n, m), (b,) = res["shapes"]["w"], res["shapes"]["b"]
    # uncompressed and full-rank PowerSGD all-reduces across processes give the exact mean
    assert rows["none"]["max_error_vs_exact_mean"] < 1e-5
    assert rows["powersgd_full"]["max_error_vs_exact_mean"] < 1e-4
    assert rows["powersgd_r2"]["max_error_vs_exact_mean"] > 0.1  # rank 2 of noise is lossy
    # exact bytes: the whole gradient vs (bias + rank-2 factors P and Q)
    assert rows["none"]["bytes_sent"] == 4 * (n * m + b)
    assert rows["powersgd_r2"]["bytes_sent"] == 4 * (b + 2 * (n + m))
    assert all(r["step_ms"] > 0 for r in rows.values())
