"""The device mesh ('data', 'fsdp', 'chunk') and the shardings of videos, batches and parameters.

The video [B, N, F, h, w, c] is sharded P(('data', 'fsdp'), 'chunk'): rows over data (and fsdp, which also
splits the batch, as in FSDP), chunks over 'chunk'. Global tokens [B, G, D] are sharded over the batch axes
only, i.e. replicated over 'chunk'. Parameters are replicated, or split over 'fsdp' by a size rule.
Axes are Auto (not Explicit, JAX 0.10's default): the model's jnp code runs unannotated inside shard_map.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "chunk")
BATCH = ("data", "fsdp")
CHUNK = "chunk"
VIDEO = P(BATCH, CHUNK)      # [B, N or T, ...]
ROWS = P(BATCH)              # [B, ...]
CHUNKS = P(None, CHUNK)      # [B, N, ...] for a shard_map manual over 'chunk' only (the train step)
REPLICATED = P()
FSDP_MIN_SIZE = 2 ** 10      # parameters smaller than this stay replicated


def make_mesh(config, devices=None) -> Mesh:
  m = config.mesh
  devices = jax.devices() if devices is None else devices
  shape = (m.data, m.fsdp, m.chunk)
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f"mesh.data * mesh.fsdp * mesh.chunk = {int(np.prod(shape))} must equal the number of "
                     f"devices {len(devices)}")
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def is_sharded(mesh: Mesh | None) -> bool:
  return mesh is not None and mesh.size > 1


def param_spec(shape: tuple[int, ...], fsdp: int, *, layer_axis: bool = False) -> P:
  """FSDP rule: split the largest axis divisible by the fsdp size; small or indivisible stay replicated.

  `layer_axis`: axis 0 is a scanned stack's layer axis (model.scan_layers), never split: the scan takes
  one layer per iteration, and a split layer axis would gather the whole stack.
  """
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
    return P()
  first = 1 if layer_axis else 0
  for axis in np.argsort(shape[first:])[::-1] + first:
    if shape[axis] % fsdp == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(abstract_state, mesh: Mesh):
  """NamedShardings for a train state (params, optimizer moments and EMA follow the same rule)."""
  from vin_jax.model import layout
  fsdp = mesh.shape["fsdp"]
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp, layer_axis=layout.has_layer_axis(path))),
      abstract_state)


def named(mesh: Mesh, spec: P) -> NamedSharding:
  return NamedSharding(mesh, spec)


def rows_over_auto_batch_axes(x_BxE):
  """x with its rows split over the batch axes ('data', 'fsdp') that are still the compiler's (Auto) here.

  Inside the train step's shard_map (manual over 'chunk' only) XLA decides how activations are split over
  'data' and 'fsdp'. Left alone, it followed the fsdp-split weights into a head-parallel layout with every
  window's activations on every chip (the v5e:4x4 paper step held [64 windows, 7232, 1152] per chip). The
  blocks pin their tokens to rows, as FSDP means: the weights are gathered per layer, the batch stays split.
  A no-op outside a mesh, when the axes are manual (the sampler) or of size 1, or when the rows do not divide.
  """
  sizes = auto_axes()
  axes = tuple(a for a in BATCH if sizes.get(a, 1) > 1)
  if not axes or x_BxE.shape[0] % int(np.prod([sizes[a] for a in axes])):
    return x_BxE
  return jax.lax.with_sharding_constraint(x_BxE, P(axes))


def auto_axes() -> dict[str, int]:
  """{name: size} of the current (abstract) mesh's axes that are still the compiler's (Auto) here, in mesh
  order: empty outside a mesh and inside a fully manual shard_map."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return {}
  return {name: mesh.shape[name] for name, kind in zip(mesh.axis_names, mesh.axis_types)
          if kind != AxisType.Manual}


def batch_row_offset(local_rows: int):
  """Inside shard_map: the global index of this device's first batch row."""
  return jax.lax.axis_index(BATCH) * local_rows


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """This process's rows (numpy) -> global arrays sharded like the train step expects.

  Each process holds B / process_count rows of every chunk (the pipeline shards rows by process), so the
  mesh must place each process's devices along the batch axes.
  """
  specs = {"frames": VIDEO, "text_tokens": ROWS}
  out = {}
  for key, value in local_batch.items():
    sharding = NamedSharding(mesh, specs.get(key, ROWS))
    global_shape = (value.shape[0] * jax.process_count(),) + tuple(value.shape[1:])
    out[key] = jax.make_array_from_process_local_data(sharding, np.asarray(value), global_shape)
  return out
