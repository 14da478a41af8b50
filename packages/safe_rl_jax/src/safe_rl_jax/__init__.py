"""Constrained RL in JAX: PLO (predictive Lagrangian) and EPO (semi-infinite exchange policy optimization)."""

__version__ = "0.1.0"
