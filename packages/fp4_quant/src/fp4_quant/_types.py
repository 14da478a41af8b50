"""Shape-annotated array aliases shared by the package's modules."""

from jaxtyping import Array, Float, Int, Key, UInt8

Matrix = Float[Array, "rows cols"]
Packed = UInt8[Array, "rows half_cols"]
Codes = UInt8[Array, "*shape"]
Channels = Int[Array, " k"]
PRNGKey = Key[Array, ""]

__all__ = ["Array", "Channels", "Codes", "Float", "Int", "Matrix", "Packed", "PRNGKey", "UInt8"]
