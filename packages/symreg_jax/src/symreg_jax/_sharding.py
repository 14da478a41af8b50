"""Population evaluation sharded over devices (the population axis is split, data replicated)."""

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ._evaluate import evaluate_population
from ._primitives import PrimitiveSet
from ._types import Consts, Inputs, Predictions, Tokens


def population_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis ``"pop"`` over `devices` (default: all)."""
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh((len(devices),), ("pop",), devices=devices)


def evaluate_population_sharded(
    tokens: Tokens, consts: Consts, inputs: Inputs, pset: PrimitiveSet, mesh: Mesh
) -> Predictions:
    """`evaluate_population` with the population split over ``mesh`` axis ``"pop"``; the result
    stays sharded the same way. The population size must be divisible by the device count."""
    n_dev = mesh.shape["pop"]
    if tokens.shape[0] % n_dev:
        raise ValueError(
            f"tokens: population {tokens.shape[0]} must be divisible by the {n_dev} devices"
        )
    pop = NamedSharding(mesh, P("pop"))
    rep = NamedSharding(mesh, P())
    fn = jax.jit(
        lambda t, c, x: evaluate_population(t, c, x, pset),
        in_shardings=(pop, pop, rep),
        out_shardings=pop,
    )
    return fn(tokens, consts, inputs)
