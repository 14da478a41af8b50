"""Constrained RL in JAX: PLO (predictive Lagrangian) and EPO (semi-infinite exchange policy
optimization)."""

from ._controllers import ConstraintSignal as ConstraintSignal
from ._controllers import MultiplierController as MultiplierController
from ._controllers import constraint_signal as constraint_signal
from ._controllers import incremental_pid_lagrangian as incremental_pid_lagrangian
from ._controllers import lagrangian as lagrangian
from ._controllers import masked as masked
from ._controllers import pid_lagrangian as pid_lagrangian
from ._env import Environment as Environment
from ._env import EnvState as EnvState
from ._env import check_environment as check_environment
from ._epo import EPO as EPO
from ._epo import FIXED_GRID as FIXED_GRID
from ._epo import RANDOM as RANDOM
from ._epo import EPOConfig as EPOConfig
from ._epo import EPOState as EPOState
from ._epo import make_epo as make_epo
from ._exchange import WorkingSet as WorkingSet
from ._exchange import add_violated as add_violated
from ._exchange import drop_inactive as drop_inactive
from ._exchange import empty_working_set as empty_working_set
from ._gae import gae as gae
from ._gae import gae_reference as gae_reference
from ._learner import PPOConfig as PPOConfig
from ._learner import Trainer as Trainer
from ._learner import TrainState as TrainState
from ._learner import evaluate_policy as evaluate_policy
from ._learner import make_trainer as make_trainer
from ._metrics import constraint_curve_stats as constraint_curve_stats
from ._metrics import feasible_region as feasible_region
from ._networks import Agent as Agent
from ._plo import plo as plo
from ._plo import predicted_step as predicted_step
from ._semi_infinite import Box as Box
from ._semi_infinite import Trajectories as Trajectories
from ._semi_infinite import box as box
from ._semi_infinite import record_rollouts as record_rollouts
from ._semi_infinite import violation_fn as violation_fn
from ._semi_infinite import violation_map as violation_map
from ._semi_infinite import worst_violations as worst_violations
from ._spray import SprayField as SprayField
from ._spray import spray_cost_fn as spray_cost_fn
from ._switch import SwitchState as SwitchState
from ._switch import choose as choose
from ._switch import switch as switch
from ._tasks import TASKS as TASKS
from ._tasks import CartPolePosition as CartPolePosition
from ._tasks import PendulumSpeed as PendulumSpeed
from ._tasks import PointGoalHazards as PointGoalHazards
from ._tasks import make_task as make_task

__version__ = "0.1.0"
