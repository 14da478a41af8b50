"""Shared helpers for experiments only (never imported by a library).

Everything an experiment needs besides its library: metric logging, a progress bar, orbax
checkpoint managers, seed handling, figure saving and the results.json schema that the
`reproduce` main job turns into a report.
"""

from ._checkpoint import checkpoint_manager as checkpoint_manager
from ._figures import save_figure as save_figure
from ._launch import run_main as run_main
from ._metrics import MetricLogger as MetricLogger
from ._progress import progress as progress
from ._results import Claim as Claim
from ._results import Table as Table
from ._results import machine_info as machine_info
from ._results import write_results as write_results
from ._seeds import median_over as median_over
from ._seeds import seed_keys as seed_keys
