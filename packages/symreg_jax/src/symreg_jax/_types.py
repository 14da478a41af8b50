"""Shape aliases used across the package (jaxtyping)."""

from jaxtyping import Array, Float, Int

Tokens = Int[Array, "pop length"]
Consts = Float[Array, "pop length"]
Inputs = Float[Array, "points vars"]
Targets = Float[Array, " points"]
Predictions = Float[Array, "pop points"]
Fitness = Float[Array, " pop"]

__all__ = ["Tokens", "Consts", "Inputs", "Targets", "Predictions", "Fitness"]
