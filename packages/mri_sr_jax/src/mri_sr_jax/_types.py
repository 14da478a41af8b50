"""Shape aliases used across the package (jaxtyping)."""

from jaxtyping import Array, Float, Int, PRNGKeyArray

Image = Float[Array, "batch height width"]
Slice = Float[Array, "height width"]
Channels = Float[Array, "batch height width channels"]
NoiseLevel = Float[Array, " batch"]
Times = Float[Array, " batch"]
Key = PRNGKeyArray

__all__ = ["Array", "Channels", "Float", "Image", "Int", "Key", "NoiseLevel", "Slice", "Times"]
