"""Shape aliases used across the package (jaxtyping)."""

from jaxtyping import Array, Float, Int, PRNGKeyArray

Image = Float[Array, "batch height width"]
Slice = Float[Array, "height width"]
# A slice on the low-resolution grid (blur_decimate, kspace_truncate): its own sizes.
LowSlice = Float[Array, "low_height low_width"]
Channels = Float[Array, "batch height width channels"]
# Conditioning channels on the same grid as `Channels`, their own channel count.
CondChannels = Float[Array, "batch height width cond_channels"]
NoiseLevel = Float[Array, " batch"]
Times = Float[Array, " batch"]
Key = PRNGKeyArray

__all__ = [
    "Array",
    "Channels",
    "CondChannels",
    "Float",
    "Image",
    "Int",
    "Key",
    "LowSlice",
    "NoiseLevel",
    "Slice",
    "Times",
]
