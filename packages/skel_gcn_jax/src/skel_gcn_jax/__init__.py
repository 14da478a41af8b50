"""KGS-GCN: kinematic Gaussian splatting and probabilistic topology for skeleton action recognition."""

__version__ = "0.1.0"
