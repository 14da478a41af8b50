"""Launch: python experiments/edgc/main.py --config=experiments/edgc/config.py:small --workdir=D"""

import os

# 8 simulated devices for the data-parallel mesh; must be set before jax is imported.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from train import train_and_evaluate  # noqa: E402

from xplib import run_main  # noqa: E402

if __name__ == "__main__":
    run_main(train_and_evaluate)
