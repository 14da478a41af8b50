"""Precision policies: which recipe each projection of each block uses, and where HCP runs.

Projection names used by the models: qkv_proj (fused q|k|v, plus GLA's output gate g),
o_proj, gk_proj (GLA's low-rank decay, both factors), up_gate_proj (fused SwiGLU gate|up),
down_proj. Attention score/value products,
embeddings, norms and the LM head always stay in high precision (they never go through here).
"""

from typing import NamedTuple

from ._matmul import HIGH_PRECISION, NVIDIA_NVFP4, PLAIN_NVFP4, MatmulRecipe

POST_QK = ("o_proj", "gk_proj")


class PrecisionPolicy(NamedTuple):
    default: MatmulRecipe = NVIDIA_NVFP4
    high_precision_names: tuple[str, ...] = ()
    high_precision_layers: tuple[int, ...] = ()
    hcp_k: int = 0

    def recipe_for(self, layer: int, name: str) -> MatmulRecipe:
        if name in self.high_precision_names or layer in self.high_precision_layers:
            return HIGH_PRECISION
        return self.default

    def hcp_k_for(self, layer: int, name: str) -> int:
        return self.hcp_k if self.recipe_for(layer, name).fmt != "none" else 0


def high_precision_policy() -> PrecisionPolicy:
    return PrecisionPolicy(default=HIGH_PRECISION)


def plain_nvfp4_policy() -> PrecisionPolicy:
    """Every linear in NVFP4, 1x16 blocks everywhere, nearest rounding, no RHT."""
    return PrecisionPolicy(default=PLAIN_NVFP4)


def nvidia_policy(high_precision_layers: tuple[int, ...] = ()) -> PrecisionPolicy:
    """NVIDIA's recipe: 16x16 weight blocks, SR on gradients, RHT on wgrad operands."""
    return PrecisionPolicy(default=NVIDIA_NVFP4, high_precision_layers=high_precision_layers)


def chon_policy(
    hcp_k: int = 4,
    protect: tuple[str, ...] = POST_QK,
    default: MatmulRecipe = NVIDIA_NVFP4,
    high_precision_layers: tuple[int, ...] = (),
) -> PrecisionPolicy:
    """CHON: the NVFP4 recipe + Hot-Channel Patch + post-QK projections in high precision."""
    if hcp_k < 1:
        raise ValueError(f"hcp_k: expected >= 1 for CHON, got {hcp_k}")
    return PrecisionPolicy(default, tuple(protect), tuple(high_precision_layers), hcp_k)
