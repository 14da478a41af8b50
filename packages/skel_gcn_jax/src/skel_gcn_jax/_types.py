"""Shape aliases used across the package (jaxtyping, checked at test time).

Layout conventions:
- NTU tensors are `(C, T, V, M)` per sequence: 3 coordinates, T frames, 25 joints, 2 persons;
  batches add a leading `N`.
- Networks compute channels-last, `(N, T, V, C)`, so `nnx.Conv` and einsums read naturally.
"""

import numpy as np
from jaxtyping import Array, Float, Int

# Preprocessing takes host (numpy) data as well as device arrays; it returns device arrays.
Skeleton = Float[Array | np.ndarray, "*batch 3 time joint person"]
SampledSkeleton = Float[Array, "*batch 3 frames joint person"]
SkeletonBatch = Float[Array | np.ndarray, "batch 3 time joint person"]
Features = Float[Array, "batch time joint channel"]
Adjacency = Float[Array, "joint joint"]
PartitionedAdjacency = Float[Array, "subset joint joint"]
SampleAdjacency = Float[Array, "*batch joint joint"]
Heatmaps = Float[Array, "*batch time view group height width"]
Logits = Float[Array, "batch classes"]
Labels = Int[Array, " batch"]
