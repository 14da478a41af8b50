"""EPO vs fixed-grid and random-sampling constraints on the semi-infinite spraying task.

python experiments/epo/main.py --config=experiments/epo/config.py:small --workdir=/tmp/epo
"""

import ml_collections

PAPER = "EPO (arXiv 2511.04147)"
ORDER = 41


def get_config(arg=None):
    preset = arg or "small"
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0
    c.modes = ("epo", "fixed_grid", "random")
    c.learning_rate = 2e-3
    c.num_epochs = 4
    c.num_minibatches = 4
    c.hidden = (32, 32)
    c.lagrangian_lr = 0.5
    c.capacity = 8
    c.eta = 0.05
    c.grid_points = 32  # training-time search grid
    c.check_grid_points = 256  # final check grid: 8x finer than the search grid, 32x the fixed grid
    c.num_starts = 4
    c.check_episodes = 16
    if preset == "smoke":
        c.num_seeds = 2
        c.num_envs = 16
        c.outer_iterations = 4
        c.inner_iterations = 3
    elif preset == "small":
        c.num_seeds = 5
        c.num_envs = 16
        c.outer_iterations = 20
        c.inner_iterations = 5
    elif preset == "full":
        c.num_seeds = 10
        c.num_envs = 64
        c.outer_iterations = 100
        c.inner_iterations = 10
        c.check_episodes = 64
    else:
        raise ValueError(f"preset: expected smoke, small or full, got {preset!r}")
    return c
