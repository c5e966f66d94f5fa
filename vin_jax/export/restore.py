"""The weights of a workdir's Orbax checkpoint, on the host, from any mesh and any number of processes.

Only `step` and one weights tree ("ema" or "params") are read (an Orbax partial restore): the optimizer
state is neither loaded nor needed, so a checkpoint restores even if the optimizer's structure changed.
Every process takes part: the weights are restored sharded over all devices (the FSDP rule of
`mesh.param_spec`, so no device holds more than it must) and then gathered to every process's host.
The names are always the unrolled layout's ("dit.blocks.3.attn.q.kernel"), whatever model.scan_layers the
checkpoint or the config has: the weights are restored in the checkpoint's own layout and unstacked on the host.
"""
from __future__ import annotations

import pathlib

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding

from vin_jax import checkpointing
from vin_jax.export import ExportError, names
from vin_jax.model import ModelDef, layout
from vin_jax.parallel import mesh as mesh_lib

WEIGHTS = ("ema", "params")


def all_devices_mesh() -> jax.sharding.Mesh:
  """('data', 'fsdp', 'chunk') = (1, every device, 1): parameters split over all devices."""
  return jax.make_mesh((1, jax.device_count(), 1), mesh_lib.AXES, axis_types=(AxisType.Auto,) * 3)


def checkpoint_step(workdir: str | pathlib.Path, step: int | None = None) -> int:
  """The latest (or the given) checkpoint step in WORKDIR/checkpoints; ExportError if there is none."""
  directory = pathlib.Path(workdir) / "checkpoints"
  if not directory.is_dir():
    raise ExportError(f"no checkpoints in {workdir}: {directory} does not exist (train first)")
  manager = checkpointing.Manager(directory, async_save=False)
  try:
    latest = manager.latest_step()
  finally:
    manager.close()
  if latest is None:
    raise ExportError(f"no checkpoint in {directory} (train first)")
  if step is not None and not (directory / str(step)).is_dir():
    raise ExportError(f"no checkpoint of step {step} in {directory} (latest: {latest})")
  return latest if step is None else step


def restore_weights(config, workdir: str | pathlib.Path, *, weights: str = "ema",
                    step: int | None = None) -> tuple[dict[str, np.ndarray], int]:
  """({dotted name: fp32 host array} of the `weights` of `config`'s model, step) from WORKDIR's checkpoint, named
  per layer (the unrolled layout)."""
  if weights not in WEIGHTS:
    raise ExportError(f"--weights={weights!r} must be one of {WEIGHTS}")
  import orbax.checkpoint as ocp
  step = checkpoint_step(workdir, step)
  path = (pathlib.Path(workdir) / "checkpoints" / str(step) / "state").absolute()
  mesh = all_devices_mesh()
  abstract = ModelDef(config).abstract_params()
  shardings = mesh_lib.state_shardings(abstract, mesh)
  target = {
      weights: jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings),
      "step": jax.ShapeDtypeStruct((), np.int32, sharding=NamedSharding(mesh, mesh_lib.REPLICATED)),
  }
  try:
    with ocp.PyTreeCheckpointer() as checkpointer:
      target = checkpointing.stored_layout(target, checkpointing.metadata_tree(checkpointer.metadata(path)))
      restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape,
                                                                 dtype=a.dtype), target)
      state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                                                     partial_restore=True))
  except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
    first_line = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    raise ExportError(f"cannot restore the {weights} weights of {path} as the config's model (is --config the "
                      f"run's config?): {first_line}") from None
  host = names.flatten(layout.unstack_layers(jax.tree.map(to_host, state[weights])))
  return host, int(to_host(state["step"]))


def to_host(x) -> np.ndarray:
  """A (possibly multi-process) global array -> the whole value as numpy, on every process."""
  if jax.process_count() == 1 or x.is_fully_addressable:
    return np.asarray(jax.device_get(x))
  if x.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
