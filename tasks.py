#!/usr/bin/env python3
"""The two commands of this repository, runnable on a machine with only Python 3.11+ and pip.

    python3 tasks.py test                 # set up (uv, locked env) and run every test
    python3 tasks.py reproduce            # set up and run the main job (`small` presets)
    python3 tasks.py reproduce --smoke    # the same with `smoke` presets (minutes)

Set-up is the same for both: install uv with pip if it is missing, then
`uv sync --all-packages --group dev --locked` into .venv (the versions in uv.lock, nothing else).
Extra arguments after the command go to pytest or to experiments/reproduce.py.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _uv() -> list[str]:
    """A command prefix that runs uv, installing it with pip first when it is missing."""
    probe = [sys.executable, "-m", "uv", "--version"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        print("tasks: uv not found, installing it with pip", flush=True)
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "uv"]
        if subprocess.run(pip).returncode != 0:
            subprocess.run(pip + ["--user", "--break-system-packages"], check=True)
    return [sys.executable, "-m", "uv"]


def setup() -> Path:
    """Create/refresh .venv exactly as uv.lock says; returns the venv's python."""
    extra = ["--extra", "cuda"] if os.environ.get("JAX_CUDA") == "1" else []
    cmd = _uv() + ["sync", "--all-packages", "--group", "dev", "--locked", *extra]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return ROOT / ".venv" / "bin" / "python"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("test", "reproduce"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    python = setup()
    env = os.environ | {"MPLBACKEND": "Agg"}
    if command == "test":
        # Two workers for two cores: most test time is single-threaded tracing and compiling.
        cmd = [str(python), "-m", "pytest", "-n", "2", "--durations=15", *rest]
    else:
        cmd = [str(python), "experiments/reproduce.py", *rest]
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
