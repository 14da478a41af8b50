"""CHON: NVFP4 training, outlier analysis, Hot-Channel Patch and post-QK protection, with Pallas kernels."""

__version__ = "0.1.0"
