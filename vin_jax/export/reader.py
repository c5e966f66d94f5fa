"""An export directory -> params for a config's model (what `sample --params=OUT` loads).

The tensors must be exactly the model's: no name missing, none unexpected, every shape equal (`files`
has already checked sizes, checksums and the export's dtype). bfloat16 weights are widened to the
model's parameter dtype (float32). Tensor names are per layer (the unrolled layout); a model with
model.scan_layers gets them stacked on the host before they are placed.
"""
from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from vin_jax.export import ExportError, files, names
from vin_jax.model import ModelDef, layout
from vin_jax.parallel import mesh as mesh_lib


def check_against(expected: dict[str, jax.ShapeDtypeStruct], tensors: dict[str, np.ndarray], source: str) -> None:
  """Raises ExportError naming the first missing, unexpected or wrongly shaped tensor."""
  missing = [n for n in expected if n not in tensors]
  unexpected = [n for n in tensors if n not in expected]
  if missing:
    raise ExportError(f"{source} lacks {len(missing)} of the config's tensors, e.g. {missing[0]!r} "
                      f"{tuple(expected[missing[0]].shape)}: exported from another model config?")
  if unexpected:
    raise ExportError(f"{source} has {len(unexpected)} tensors the config's model does not, e.g. "
                      f"{unexpected[0]!r} {tuple(tensors[unexpected[0]].shape)}: exported from another model config?")
  for name, spec in expected.items():
    if tuple(tensors[name].shape) != tuple(spec.shape):
      raise ExportError(f"tensor {name!r} in {source} has shape {tuple(tensors[name].shape)}, the config's model "
                        f"needs {tuple(spec.shape)}")


def load_exported(config, path: str | pathlib.Path, *, mesh=None):
  """(ModelDef, params, step) from the export at `path` for `config`'s model; with `mesh`, the params are
  placed on that mesh's parameter shardings (as `sampling.load_params` does)."""
  model_def = ModelDef(config)
  abstract = model_def.abstract_params()
  tensors, info = files.read_weights(path)
  per_layer = layout.unstack_layers(abstract)
  expected = names.flatten(per_layer)
  check_against(expected, tensors, f"export {path}")
  host = {n: np.asarray(tensors[n]).astype(spec.dtype) for n, spec in expected.items()}
  host = names.flatten(layout.to_layout(names.unflatten_like(per_layer, host), abstract))
  if mesh is not None:
    shardings = names.flatten(mesh_lib.state_shardings(abstract, mesh))
    placed = {n: to_device(x, shardings[n]) for n, x in host.items()}
  else:
    placed = {n: jnp.asarray(x) for n, x in host.items()}
  return model_def, names.unflatten_like(abstract, placed), int(info.get("step", 0))


def to_device(host: np.ndarray, sharding) -> jax.Array:
  """A host array, the same on every process -> a global array with `sharding` (multi-process safe)."""
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
