"""Orbax checkpoints of the train state and the data-iterator state, written asynchronously.

A checkpoint directory appears only when complete (Orbax writes to a temporary name and renames), so an
interrupted save never leaves a half-written checkpoint that a restart would pick up.

A checkpoint holds the parameters in its run's layout (model.scan_layers: stacked or unrolled layer lists, see
`vin_jax.model.layout`). `restore_partial` (sampling, export) converts them to the target's layout;
`restore_latest` (training resume) refuses a layout change with a `LayoutError` that says how to convert.
"""
from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp

from vin_jax.model import layout


class LayoutError(ValueError):
  """The checkpoint's layer layout (model.scan_layers) differs from the config's, where no conversion is made."""


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
    """Restores onto the shapes, dtypes and shardings of `target_state` (arrays or ShapeDtypeStructs); LayoutError
    if the checkpoint was written with the other model.scan_layers (a resumed run keeps its layout)."""
    stored = self.stored_tree(step)
    for key in ("params", "ema"):
      if isinstance(stored, dict) and key in stored and key in target_state:
        _check_same_layout(stored[key], target_state[key], step, self.directory)
    abstract = jax.tree.map(_abstract, target_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                   data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def restore_latest(self, target_state):
    """(state, data state) of the latest checkpoint, or None; see `restore`."""
    step = self.latest_step()
    return None if step is None else self.restore(step, target_state)

  @property
  def directory(self) -> pathlib.Path:
    return pathlib.Path(self._manager.directory)

  def stored_tree(self, step: int):
    """The state's tree as stored in checkpoint `step` (Orbax metadata leaves; int keys spelt as strings)."""
    with ocp.PyTreeCheckpointer() as checkpointer:
      return metadata_tree(checkpointer.metadata(self.directory / str(step) / "state"))

  def restore_partial(self, step: int | None, target: dict) -> dict:
    """Only the entries of `target` (e.g. {"step", "ema"}: arrays or ShapeDtypeStructs with shardings) from the
    state of checkpoint `step` (default the latest). The rest, such as the optimizer state, is not read, so a
    checkpoint restores for sampling and export even after the optimizer's structure changed. Parameters stored in
    the other layer layout (model.scan_layers) are restored as stored, then converted to the target's layout."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError("no checkpoint found")
    abstract = jax.tree.map(_abstract, target)
    stored = stored_layout(abstract, self.stored_tree(step))
    restore_args = ocp.checkpoint_utils.construct_restore_args(stored)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=stored, restore_args=restore_args, partial_restore=True)))
    return layout.convert(restored["state"], abstract)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def metadata_tree(metadata):
  """The tree of an Orbax metadata object (StepMetadata, TreeMetadata, or a tree already)."""
  metadata = getattr(metadata, "item_metadata", metadata)
  return getattr(metadata, "tree", metadata)


def stored_layout(abstract, stored_tree):
  """`abstract` (ShapeDtypeStructs) in the layer layout of a checkpoint's stored tree; shardings follow."""
  return layout.to_layout(abstract, stored_tree)


def _check_same_layout(stored, target, step: int, directory: pathlib.Path) -> None:
  stored_stacked, target_stacked = layout.is_stacked(stored), layout.is_stacked(target)
  if stored_stacked is None or target_stacked is None or stored_stacked == target_stacked:
    return
  raise LayoutError(
      f"checkpoint {step} in {directory} was written with model.scan_layers={stored_stacked}, the config has "
      f"model.scan_layers={target_stacked}: resume with --config.model.scan_layers={stored_stacked}, or convert the "
      f"run: `python -m vin_jax.main export --workdir=WORKDIR --out=EXPORT`, then `python -m vin_jax.main train "
      f"--config.model.scan_layers={target_stacked} --init_from=EXPORT` in a new workdir (sampling converts by "
      f"itself)")


def _abstract(x):
  sharding = getattr(x, "sharding", None)
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
