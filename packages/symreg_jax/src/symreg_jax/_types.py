"""Shape aliases used across the package (jaxtyping)."""

import numpy as np
from jaxtyping import Array, Float, Int

# host data may come as numpy or jax arrays
HostOrDevice = Array | np.ndarray

Tokens = Int[Array, "pop length"]
Consts = Float[Array, "pop length"]
Inputs = Float[HostOrDevice, "points vars"]
Targets = Float[Array, " points"]
Predictions = Float[Array, "pop points"]
Fitness = Float[Array, " pop"]

__all__ = ["HostOrDevice", "Tokens", "Consts", "Inputs", "Targets", "Predictions", "Fitness"]
