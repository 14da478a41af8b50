"""One strict test setup for the whole workspace (every package's tests run under it).

- 8 simulated CPU devices, so sharded code is tested against single-device code;
- rank promotion raises, so silent broadcasting bugs fail loudly;
- the derandomised hypothesis profile from testkit (override with HYPOTHESIS_PROFILE=jax-dev);
- every library's jaxtyping annotations are checked on every call: the root pyproject's addopts
  run jaxtyping's import hook (`--jaxtyping-packages=<the seven libraries>,conftest.typecheck`)
  with `typecheck` below as the type checker.
"""

import functools
import inspect
import os

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import jaxtyping  # noqa: E402
import pytest  # noqa: E402
import typeguard  # noqa: E402
from hypothesis import settings  # noqa: E402

import testkit  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", testkit.CI_PROFILE))


def pytest_report_header(config):
    return f"jax {jax.__version__}, devices: {len(jax.devices())} x {jax.devices()[0].platform}"


@pytest.fixture(autouse=True)
def _shape_checks_off(request):
    """Turns jaxtyping's checks off for a test marked `shape_checks_off`.

    For tests of a library's own argument errors (a `ValueError` naming the argument, STYLE 13):
    with the checks on, jaxtyping rejects the wrong shape before the library's check can run.
    Nothing else turns the checks off.
    """
    if request.node.get_closest_marker("shape_checks_off") is None:
        yield
        return
    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", before)


def typecheck(fn):
    """Checks `fn`'s arguments and return value against its annotations (typeguard.check_type).

    jaxtyping's import hook calls this on every function and dataclass `__init__` of the
    instrumented libraries, inside `jaxtyped`, which holds the shape memo, so `"batch"` must mean
    the same size in every argument and in the result. typeguard's own `@typechecked` cannot be
    the checker here: it recompiles a function from its source, and the functions jaxtyped hands
    over are generated without one ("instrumentor did not find the target function"). beartype,
    the checker jaxtyping recommends, is not in uv.lock.
    """
    signature = inspect.signature(fn)
    params = [p for p in signature.parameters.values() if p.annotation is not p.empty]
    returns = signature.return_annotation

    def check(value, annotation, what):
        try:
            typeguard.check_type(value, annotation)
        except typeguard.TypeCheckError as e:
            raise typeguard.TypeCheckError(f"{what} of {fn.__qualname__}: {e}") from None

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        for p in params:
            if p.name not in bound.arguments:
                continue  # a default, not checked (as typeguard and beartype do)
            value = bound.arguments[p.name]
            if p.kind is p.VAR_POSITIONAL:
                for v in value:
                    check(v, p.annotation, f"*{p.name}")
            elif p.kind is p.VAR_KEYWORD:
                for k, v in value.items():
                    check(v, p.annotation, f"**{p.name}[{k!r}]")
            else:
                check(value, p.annotation, f"argument {p.name!r}")
        out = fn(*args, **kwargs)
        if returns is not signature.empty:
            check(out, returns, "the return value")
        return out

    return checked
