"""Network parameterisations: eps-, x0- and v-prediction, converted to (x0, eps) and back.

With a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar), x_t = a x0 + s eps and v = a eps - s x0.
"""

import jax.numpy as jnp

from ._types import Array

PARAMETERISATIONS = ("eps", "x0", "v")


def check_parameterisation(parameterisation: str) -> None:
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(
            f"parameterisation: expected one of {PARAMETERISATIONS}, got {parameterisation!r}"
        )


def _bcast(ab: Array, x: Array) -> Array:
    return ab.reshape(ab.shape + (1,) * (x.ndim - ab.ndim))


def to_x0_eps(output: Array, x_t: Array, alpha_bar: Array, parameterisation: str):
    """Turn a network output into (x0_hat, eps_hat) given x_t and alpha_bar (per batch row)."""
    ab = _bcast(alpha_bar, x_t)
    a, s = jnp.sqrt(ab), jnp.sqrt(1.0 - ab)
    if parameterisation == "eps":
        return (x_t - s * output) / a, output
    if parameterisation == "x0":
        return output, (x_t - a * output) / s
    if parameterisation == "v":
        return a * x_t - s * output, s * x_t + a * output
    check_parameterisation(parameterisation)
    raise AssertionError  # unreachable


def training_target(x0: Array, eps: Array, alpha_bar: Array, parameterisation: str) -> Array:
    """What the network regresses on for the given parameterisation."""
    ab = _bcast(alpha_bar, x0)
    if parameterisation == "eps":
        return eps
    if parameterisation == "x0":
        return x0
    if parameterisation == "v":
        return jnp.sqrt(ab) * eps - jnp.sqrt(1.0 - ab) * x0
    check_parameterisation(parameterisation)
    raise AssertionError  # unreachable
