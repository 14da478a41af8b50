"""The workspace is what README.md, WORKSPACE.md and .ci/run say it is."""

import ast
import pathlib
import re
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
# What a library may never import: another member of this repo, or launch-script tooling.
FORBIDDEN = set(PACKAGES) | {"absl", "ml_collections", "xplib", "testkit"}


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- commands -->\s*```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md needs the fenced command block after <!-- commands -->"
    return [
        ln.strip() for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")
    ]


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert "reproduce" in main_job and "test" in tests
    ci = [
        ln.strip()
        for ln in (ROOT / ".ci" / "run").read_text().splitlines()
        if ln.strip() and not ln.startswith("#") and not ln.startswith(("set ", "cd "))
    ]
    assert ci == [tests], f".ci/run must run exactly the README test command {tests!r}, runs {ci}"
    assert tests in (ROOT / "WORKSPACE.md").read_text()
    assert main_job in (ROOT / "WORKSPACE.md").read_text()


def test_seven_packages_are_the_workspace_members():
    assert PACKAGES == sorted(
        [
            "diffusion_serve_jax",
            "fp4_quant",
            "grad_compress",
            "mri_sr_jax",
            "safe_rl_jax",
            "skel_gcn_jax",
            "symreg_jax",
        ]
    )
    workspace = (ROOT / "WORKSPACE.md").read_text()
    for pkg in PACKAGES:
        assert f"packages/{pkg}" in workspace, f"WORKSPACE.md does not map packages/{pkg}"


@pytest.mark.parametrize("pkg", PACKAGES)
def test_package_layout(pkg):
    base = ROOT / "packages" / pkg
    for rel in ("pyproject.toml", "README.md", f"src/{pkg}/__init__.py", "tests"):
        assert (base / rel).exists(), f"packages/{pkg}/{rel} is missing"
    meta = tomllib.loads((base / "pyproject.toml").read_text())["project"]
    assert meta["name"].replace("-", "_") == pkg


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("pkg", PACKAGES)
def test_library_imports_no_other_member(pkg):
    for path in (ROOT / "packages" / pkg / "src").rglob("*.py"):
        bad = (_imports(path) & FORBIDDEN) - {pkg}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


# Distribution names for modules whose import name differs.
_DIST = {
    "orbax": "orbax-checkpoint",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "absl": "absl-py",
    "ml_collections": "ml-collections",
}
# Declared but never imported, on purpose: packages whose bundled data files a library reads.
_DATA_ONLY = {"mri_sr_jax": {"nilearn", "dipy"}}


def _declared(pyproject: pathlib.Path) -> set[str]:
    """Required dependencies plus every optional extra (e.g. `safe-rl-jax[brax]`)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {}).values()
    deps = project["dependencies"] + [dep for extra in extras for dep in extra]
    return {re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0] for dep in deps}


def _third_party(files, local: set[str]) -> set[str]:
    modules = set().union(*(_imports(p) for p in files))
    return {
        _DIST.get(m, m).replace("_", "-")
        for m in modules
        if m not in sys.stdlib_module_names and m not in local
    }


@pytest.mark.parametrize("pkg", PACKAGES)
def test_pyproject_declares_exactly_what_the_library_imports(pkg):
    base = ROOT / "packages" / pkg
    declared = _declared(base / "pyproject.toml")
    used = _third_party((base / "src").rglob("*.py"), {pkg})
    assert used <= declared, f"packages/{pkg}: imported but not declared: {sorted(used - declared)}"
    unused = declared - used - _DATA_ONLY.get(pkg, set())
    assert not unused, f"packages/{pkg}: declared but never imported: {sorted(unused)}"


def test_experiments_declare_what_they_import():
    files = list((ROOT / "experiments").rglob("*.py"))
    # A script's own folder is on sys.path; the libraries are workspace members.
    local = {p.stem for p in files} | {"xplib"} | set(PACKAGES)
    missing = _third_party(files, local) - _declared(ROOT / "experiments" / "pyproject.toml")
    assert not missing, f"experiments/pyproject.toml: imported but not declared: {sorted(missing)}"
