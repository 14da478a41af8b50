"""PLO vs PID Lagrangian vs gradient-ascent Lagrangian on constrained tasks.

python experiments/plo/main.py --config=experiments/plo/config.py:small --workdir=/tmp/plo

`smoke` and `small` use the pure-JAX tasks; `full` adds brax velocity tasks (`brax_<name>`,
needs `pip install safe-rl-jax[brax]`, sized for a GPU).
"""

import ml_collections

PAPER = "PLO (arXiv 2501.15217)"
ORDER = 40


def get_config(arg=None):
    preset = arg or "small"
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0
    c.methods = ("plo", "pid", "lagrangian")
    c.learning_rate = 2e-3
    c.num_epochs = 4
    c.num_minibatches = 4
    c.hidden = (32, 32)
    # Learner layout (PPOConfig; these are its defaults): separate reward and cost critics,
    # minibatches of whole per-env unrolls, the critic evaluated once after the unroll.
    c.shared_critic = False
    # The cost critic's hidden sizes; () = the same as `hidden` (README: session-9 check).
    c.cost_hidden = ()
    c.shuffle = "envs"
    c.batched_values = True
    # PLO's gradient products from the whole batch ("full"), from the first half of the
    # environments cross-fitted between its two halves ("half"), one minibatch's worth of
    # environments cross-fitted ("minibatch") or from the same sample ("minibatch_same");
    # README: quality check of all four.
    c.surrogate_batch = "full"
    # PLO's gradient products recomputed every `products_every` iterations, reused in between
    # (README: quality check, session 9).
    c.products_every = 1
    c.plo_horizon = 5
    c.plo_q_over = 1.0
    c.plo_q_under = 0.1
    c.plo_r = 0.05
    c.plo_effort = 0.0
    # brax velocity tasks (`brax_<name>`, full preset; needs `safe-rl-jax[brax]`).
    c.brax_episode_length = 1000
    c.brax_backend = "positional"
    c.lagrangian_lr = 0.05
    # Cost limits per task, in episode-cost units (steps in violation per 100-step episode);
    # all lie below the cost of the unconstrained policy, so every limit binds.
    c.limits = ml_collections.ConfigDict(
        {
            "point_goal_hazards": (1.0, 3.0),
            "cartpole_position": (10.0, 25.0),
            "pendulum_speed": (2.0, 5.0),
            # Velocity cost 1[speed > Safety-Gymnasium threshold] per step, per 1000-step
            # episode; 25 is OmniSafe's / Safety-Gymnasium's standard limit.
            "brax_halfcheetah": (10.0, 25.0),
            "brax_hopper": (10.0, 25.0),
            "brax_walker2d": (10.0, 25.0),
            "brax_ant": (10.0, 25.0),
        }
    )
    if preset == "smoke":
        c.tasks = ("point_goal_hazards",)
        c.num_seeds = 2
        c.num_envs = 16
        c.iterations = 12
        c.chunk = 6
    elif preset == "small":
        c.tasks = ("point_goal_hazards", "cartpole_position", "pendulum_speed")
        c.num_seeds = 5
        c.num_envs = 16
        c.iterations = 40
        c.chunk = 20
    elif preset == "full":
        # GPU scale: the pure-JAX tasks plus brax velocity tasks at Safety-Gymnasium thresholds
        # (64 envs x 1000 steps x 500 iterations = 32 M env steps per setting, 60 settings).
        c.tasks = (
            "point_goal_hazards",
            "cartpole_position",
            "pendulum_speed",
            "brax_halfcheetah",
            "brax_hopper",
            "brax_walker2d",
            "brax_ant",
        )
        c.num_seeds = 10
        c.num_envs = 64
        c.iterations = 500
        c.chunk = 50
        c.hidden = (64, 64)
    else:
        raise ValueError(f"preset: expected smoke, small or full, got {preset!r}")
    return c
