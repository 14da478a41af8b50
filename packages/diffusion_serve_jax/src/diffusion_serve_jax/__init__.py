"""LegoDiffusion micro-serving of diffusion workflows and InstGenIE mask-aware cached editing."""

__version__ = "0.1.0"
