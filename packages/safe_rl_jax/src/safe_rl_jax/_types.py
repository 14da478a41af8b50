"""Shape aliases used across safe_rl_jax (jaxtyping)."""

from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

Scalar = Float[Array, ""]
Obs = Float[Array, "obs"]
Action = Float[Array, "act"]
Costs = Float[Array, "costs"]
Mask = Bool[Array, "costs"]
Index = Float[Array, "costs index_dim"]
Key = PRNGKeyArray

__all__ = ["Array", "Bool", "Float", "Int", "Key", "Scalar", "Obs", "Action", "Costs", "Mask"]
