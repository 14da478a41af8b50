"""EDGC: entropy-driven dynamic low-rank gradient compression for data- and pipeline-parallel training."""

__version__ = "0.1.0"
