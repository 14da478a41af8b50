"""The absl launch convention shared by every experiment's main.py.

    python experiments/<name>/main.py --config=experiments/<name>/config.py:small --workdir=DIR

A main.py imports its `train_and_evaluate(config, workdir)` and calls
`run_main(train_and_evaluate)`; the flags are defined there, not at import, so that importing
xplib (from reproduce or a test) defines no flags.
"""

import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402


def run_main(train_and_evaluate: Callable[[Any, str], Any]) -> None:
    """Define `--config` and `--workdir`, parse them, call `train_and_evaluate(config, workdir)`."""
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results, figures.")
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Config file and preset, e.g. experiments/chon/config.py:small.",
        lock_config=True,
    )
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        logging.info("config:\n%s", flags.FLAGS.config)
        os.makedirs(flags.FLAGS.workdir, exist_ok=True)
        train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)

    app.run(main)
