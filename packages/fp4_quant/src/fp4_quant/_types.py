"""Shape-annotated array aliases shared by the package's modules."""

from jaxtyping import Array, Float, Int, PRNGKeyArray, UInt8

Matrix = Float[Array, "rows cols"]
Packed = UInt8[Array, "rows half_cols"]
Codes = UInt8[Array, "*shape"]
# The hot channels of a contraction axis: their own count, not the axis length `k`.
Channels = Int[Array, " hot"]
# A typed key (jax.random.key) or a raw uint32[2] one (jax.random.PRNGKey): both are accepted.
PRNGKey = PRNGKeyArray

__all__ = ["Array", "Channels", "Codes", "Float", "Int", "Matrix", "Packed", "PRNGKey", "UInt8"]
