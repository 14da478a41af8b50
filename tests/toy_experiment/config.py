"""Toy experiment that exercises the launch convention (tests only; not registered).

python tests/toy_experiment/main.py --config=tests/toy_experiment/config.py:smoke --workdir=/tmp/toy
"""

import ml_collections

PAPER = "Toy linear regression (tests only)"
ORDER = 0


def get_config(arg=None):
    preset = arg or "small"
    if preset not in ("smoke", "small", "full"):
        raise ValueError(f"preset: expected smoke, small or full, got {preset!r}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0
    c.steps = {"smoke": 10, "small": 100, "full": 1000}[preset]
    c.learning_rate = 0.1
    c.fail = False  # set True to check that reproduce records failures
    return c
