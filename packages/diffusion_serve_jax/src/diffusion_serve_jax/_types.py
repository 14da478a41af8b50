"""Shape aliases shared by the modules (jaxtyping)."""

from jaxtyping import Array, Float, Int

Images = Float[Array, "batch height width"]
Labels = Int[Array, "batch"]
Tokens = Float[Array, "batch tokens width"]
CondVec = Float[Array, "batch dim"]
Timesteps = Int[Array, "batch"]
TimeGrid = Float[Array, "T"]
BatchScalars = Float[Array, "batch"]
