"""Shape aliases shared by the modules (jaxtyping)."""

import numpy as np
from jaxtyping import Array, Float, Int, Real

# Inputs may come as host (numpy) arrays; outputs are device arrays.
Images = Float[Array | np.ndarray, "batch height width"]
Labels = Int[Array, "batch"]
# `hidden` is the model width, not the image width of `Images`.
Tokens = Float[Array | np.ndarray, "batch tokens hidden"]
CondVec = Float[Array | np.ndarray, "batch dim"]
Timesteps = Int[Array | np.ndarray, "batch"]
TimeGrid = Float[Array, "T"]
# Integer timesteps or float times.
BatchScalars = Real[Array | np.ndarray, "batch"]
