"""Orbax checkpoints of the train state and the data-iterator state, written asynchronously.

A checkpoint directory appears only when complete (Orbax writes to a temporary name and renames), so an
interrupted save never leaves a half-written checkpoint that a restart would pick up.
"""
from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp


class Manager:

  def __init__(self, directory: str | pathlib.Path, *, keep: int = 2, async_save: bool = True):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                           create=True)
    self._manager = ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options,
                                          item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, data_state: dict) -> None:
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     data=ocp.args.JsonSave(data_state)))

  def restore(self, step: int, target_state):
    """Restores onto the shapes, dtypes and shardings of `target_state` (arrays or ShapeDtypeStructs)."""
    abstract = jax.tree.map(_abstract, target_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                   data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def restore_latest(self, target_state):
    step = self.latest_step()
    return None if step is None else self.restore(step, target_state)

  def restore_partial(self, step: int | None, target: dict) -> dict:
    """Only the entries of `target` (e.g. {"step", "ema"}: arrays or ShapeDtypeStructs with shardings) from the
    state of checkpoint `step` (default the latest). The rest, such as the optimizer state, is not read, so a
    checkpoint restores for sampling and export even after the optimizer's structure changed."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError("no checkpoint found")
    abstract = jax.tree.map(_abstract, target)
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=abstract, restore_args=restore_args, partial_restore=True)))
    return restored["state"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _abstract(x):
  sharding = getattr(x, "sharding", None)
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
