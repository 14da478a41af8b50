"""Host-side validation: errors name the argument, what was expected and what came."""

import jax
import jax.numpy as jnp
import numpy as np

ROUNDINGS = ("nearest", "stochastic")
BLOCKS = ("1x16", "16x16")


def check_float_array(x, name: str, *, ndim: int | None = None, min_ndim: int = 1) -> None:
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"{name}: expected a JAX/NumPy array, got {type(x).__name__}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating dtype, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {tuple(x.shape)}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dims, got shape {tuple(x.shape)}")
    if x.size == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {tuple(x.shape)}")


def check_multiple(size: int, multiple: int, name: str, what: str) -> None:
    if size % multiple:
        raise ValueError(f"{name}: {what} must be a multiple of {multiple}, got {size}")


def check_choice(value, choices, name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def check_rounding_key(rounding: str, key) -> None:
    check_choice(rounding, ROUNDINGS, "rounding")
    if rounding == "stochastic" and key is None:
        raise ValueError("key: stochastic rounding needs an explicit PRNG key, got None")


def check_finite(x, name: str) -> None:
    """Raise ValueError if concrete `x` holds NaN or inf (no-op on tracers).

    The E2M1 cast silently turns NaN into -0 and E4M3 overflows to NaN, so callers that want
    an error rather than NaN propagation call this on the host before quantizing.
    """
    if isinstance(x, jax.core.Tracer):
        return
    arr = np.asarray(x, dtype=np.float32)
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ValueError(f"{name}: expected finite values, got {bad} NaN/inf entries")
