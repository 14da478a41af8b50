"""jaxtyping checks every library's annotations in the default test run (STYLE 5).

The root pyproject's addopts run jaxtyping's import hook over the seven libraries, with the root
conftest's `typecheck` as the checker. `test_every_library_is_instrumented` fails if a library or
the checker drops out of that list; the calls below pass a wrongly shaped array to one public
function of each library and expect jaxtyping's error. They skip only where the hook is off for
that library (a command line that overrides addopts); with the hook on they fail if the check does
not happen (JAXTYPING_DISABLE=1, a checker that passes everything, an import before the hook).
"""

import tomllib
from pathlib import Path

import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "src").is_dir())
CHECKER = "conftest.typecheck"


def _configured(config) -> list[str]:
    """The packages named by --jaxtyping-packages in this run (the last name is the checker)."""
    value = config.getoption("jaxtyping_packages") or ""
    return [name.strip() for name in value.split(",") if name.strip()]


def test_every_library_is_instrumented():
    pytest_ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    addopts = pytest_ini["ini_options"]["addopts"]
    (option,) = [a for a in addopts if a.startswith("--jaxtyping-packages=")]
    *packages, checker = option.removeprefix("--jaxtyping-packages=").split(",")
    assert sorted(packages) == LIBRARIES
    assert checker == CHECKER


def _wrong_shape_calls():
    """(library, call, parameter): `call()` passes a wrongly shaped array as `parameter`."""
    import diffusion_serve_jax as ds
    import fp4_quant as fq
    import grad_compress as gc
    import mri_sr_jax as msr
    import safe_rl_jax as srl
    import skel_gcn_jax as sg
    import symreg_jax as sr

    ok2 = jnp.ones((8, 8))
    pset = sr.PrimitiveSet(operators=("add", "mul"), n_vars=1, max_len=8)
    images = jnp.ones((2, 8, 8))
    rewards = jnp.ones((5, 3))
    return {
        "symreg_jax": (lambda: sr.subtree_end(jnp.zeros((2, 8), jnp.int32), pset), "tokens"),
        "fp4_quant": (lambda: fq.nvfp4_quantize(jnp.ones((32,))), "x"),
        "grad_compress": (lambda: gc.orthogonalize(jnp.ones((8,))), "p"),
        "safe_rl_jax": (
            # values' time axis (4) differs from rewards' (5).
            lambda: srl.gae(
                rewards,
                jnp.ones((4, 3)),
                jnp.ones((3,)),
                rewards,
                discount=0.99,
                lambda_=0.95,
            ),
            "values",
        ),
        "diffusion_serve_jax": (
            # noise's batch (3) differs from x0's (2).
            lambda: ds.q_sample(
                ds.make_schedule(10), images, jnp.zeros((2,), jnp.int32), jnp.ones((3, 8, 8))
            ),
            "noise",
        ),
        "mri_sr_jax": (lambda: msr.psnr(ok2, jnp.ones((8, 9))), "ref"),
        # 4 coordinates where a skeleton has 3 (x, y, z).
        "skel_gcn_jax": (lambda: sg.centre_skeleton(np.ones((4, 5, 25, 2), np.float32)), "x"),
    }


@pytest.mark.parametrize("library", LIBRARIES)
def test_wrong_shape_raises_jaxtyping_error(library, pytestconfig):
    if library not in _configured(pytestconfig):
        pytest.skip(f"jaxtyping's import hook is off for {library} in this run")
    call, parameter = _wrong_shape_calls()[library]
    with pytest.raises(jaxtyping.TypeCheckError, match=f"parameter '{parameter}'"):
        call()
