"""Orbax checkpoint managers with the settings every experiment uses."""

import pathlib

import orbax.checkpoint as ocp


def checkpoint_manager(
    workdir: str | pathlib.Path, *, max_to_keep: int = 2, save_interval_steps: int = 1
) -> ocp.CheckpointManager:
    """A manager under `<workdir>/checkpoints`; `latest_step()` is None on a fresh run.

    Save with `mngr.save(step, args=ocp.args.StandardSave(pytree))`; restore into an abstract
    target (`jax.eval_shape` / `nnx.eval_shape` state) with `ocp.args.StandardRestore(target)`.
    """
    path = pathlib.Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, save_interval_steps=save_interval_steps, create=True
    )
    return ocp.CheckpointManager(path, options=options)
