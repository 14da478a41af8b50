"""Shape-annotated aliases used across grad_compress."""

from typing import Any

from jaxtyping import Array, Float, Int, PRNGKeyArray

PyTree = Any
Key = PRNGKeyArray
Vector = Float[Array, "d"]
Matrix = Float[Array, "n m"]
Scalar = Float[Array, ""]
Ranks = Int[Array, "leaves"]
StageValues = Float[Array, "stages"]
StageInts = Int[Array, "stages"]
Edges = Float[Array, "edges"]
Spectrum = Float[Array, "k"]
Curve = Float[Array, "rank"]
Flat = Float[Array, "size"]
