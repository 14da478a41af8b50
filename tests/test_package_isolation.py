"""Each library installs alone (its own locked dependencies only) and imports without the others."""

import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
UV = [sys.executable, "-m", "uv"]


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.parametrize("pkg", PACKAGES)
def test_library_installs_and_imports_alone(pkg, tmp_path):
    name = tomllib.loads((ROOT / "packages" / pkg / "pyproject.toml").read_text())["project"][
        "name"
    ]
    req = tmp_path / "requirements.txt"
    _run(
        UV
        + [
            "export",
            "--package",
            name,
            "--frozen",
            "--no-dev",
            "--no-hashes",
            "--no-emit-workspace",
            "-o",
            str(req),
        ],
        cwd=ROOT,
    )
    venv = tmp_path / "venv"
    _run(UV + ["venv", "--quiet", "--python", sys.executable, str(venv)])
    python = str(venv / "bin" / "python")
    _run(
        UV
        + [
            "pip",
            "install",
            "--quiet",
            "--python",
            python,
            "-r",
            str(req),
            "--no-deps",
            str(ROOT / "packages" / pkg),
        ]
    )
    others = [p for p in PACKAGES if p != pkg] + ["xplib", "testkit"]
    check = (
        "import importlib.util, sys\n"
        f"import {pkg}\n"
        f"present = [m for m in {others!r} if importlib.util.find_spec(m)]\n"
        "assert not present, f'installed alongside: {present}'\n"
        f"leaked = sorted(m for m in sys.modules if m.split('.')[0] in {others!r})\n"
        "assert not leaked, leaked\n"
    )
    _run([python, "-c", check], env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
