"""One strict test setup for the whole workspace (every package's tests run under it).

- 8 simulated CPU devices, so sharded code is tested against single-device code;
- rank promotion raises, so silent broadcasting bugs fail loudly;
- the derandomised hypothesis profile from testkit (override with HYPOTHESIS_PROFILE=jax-dev).
"""

import os

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
from hypothesis import settings  # noqa: E402

import testkit  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", testkit.CI_PROFILE))


def pytest_report_header(config):
    return f"jax {jax.__version__}, devices: {len(jax.devices())} x {jax.devices()[0].platform}"
