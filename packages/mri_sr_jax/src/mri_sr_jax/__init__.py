"""MoEDiff-SR and 1.5T-to-7T-like MRI super-resolution with progressive distillation."""

__version__ = "0.1.0"
