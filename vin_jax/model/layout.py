"""The two parameter layouts of the layer lists (`dit.blocks`, `vin.processor`), and conversions between them.

  unrolled (model.scan_layers=False)  {"dit": {"blocks": {0: {"attn": {"q": {"kernel": [in, out]}}}, 1: ...}}}
  stacked  (model.scan_layers=True)   {"dit": {"blocks": {"attn": {"q": {"kernel": [depth, in, out]}}}}}

A layer list is a dict whose keys are the ints 0..n-1 (Orbax metadata spells them "0".."n-1"). Leaves may be
numpy arrays (stay on the host), jax arrays, or ShapeDtypeStructs (their shardings follow: a NamedSharding
gains or loses a leading unsplit axis).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

LAYER_LISTS = (("dit", "blocks"), ("vin", "processor"))


def is_layer_list(node) -> bool:
  """A non-empty dict keyed 0..n-1 (ints, or their decimal strings)."""
  if not isinstance(node, dict) or not node:
    return False
  try:
    keys = sorted(int(k) for k in node)
  except (TypeError, ValueError):
    return False
  return keys == list(range(len(node))) and all(str(int(k)) == str(k) for k in node)


def _layer(node: dict, i: int):
  return node[i] if i in node else node[str(i)]


def stack(layers_: dict):
  """{0: tree, ..., n-1: tree} -> one tree with a leading layer axis [n, ...] on every leaf."""
  return jax.tree.map(_stack_leaves, *[_layer(layers_, i) for i in range(len(layers_))])


def unstack(tree) -> dict:
  """One tree with a leading layer axis -> {0: tree, ..., n-1: tree}."""
  leaves = jax.tree.leaves(tree)
  n = leaves[0].shape[0]
  return {i: jax.tree.map(lambda x, i=i: _leaf_layer(x, i), tree) for i in range(n)}


def _stack_leaves(*xs):
  x = xs[0]
  if isinstance(x, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct((len(xs), *x.shape), x.dtype, sharding=_stacked_sharding(x.sharding, x.ndim))
  if all(isinstance(y, np.ndarray) for y in xs):
    return np.stack(xs)
  return jnp.stack(xs)


def _leaf_layer(x, i: int):
  if isinstance(x, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=_layer_sharding(x.sharding, x.ndim))
  return x[i]


def _spec(sharding: NamedSharding, ndim: int) -> tuple:
  spec = tuple(sharding.spec)
  return spec + (None,) * (ndim - len(spec))


def _stacked_sharding(sharding, ndim: int):
  """A layer's sharding -> the stacked leaf's: the layer axis is not split."""
  if isinstance(sharding, NamedSharding):
    return NamedSharding(sharding.mesh, PartitionSpec(None, *_spec(sharding, ndim)))
  return sharding


def _layer_sharding(sharding, ndim: int):
  """A stacked leaf's sharding -> one layer's (the layer axis's split, if any, is dropped)."""
  if isinstance(sharding, NamedSharding):
    return NamedSharding(sharding.mesh, PartitionSpec(*_spec(sharding, ndim)[1:]))
  return sharding


def _replace_at(tree: dict, path: tuple, fn):
  """`tree` with the subtree at `path` (if present) replaced by fn(subtree); the rest is shared, not copied."""
  if not isinstance(tree, dict) or path[0] not in tree:
    return tree
  if len(path) == 1:
    return {**tree, path[0]: fn(tree[path[0]])}
  return {**tree, path[0]: _replace_at(tree[path[0]], path[1:], fn)}


def stack_layers(params: dict) -> dict:
  """Unrolled -> stacked layout (the layer lists of LAYER_LISTS; already stacked or empty ones pass)."""
  for path in LAYER_LISTS:
    params = _replace_at(params, path, lambda node: stack(node) if is_layer_list(node) else node)
  return params


def unstack_layers(params: dict) -> dict:
  """Stacked -> unrolled layout (the layer lists of LAYER_LISTS; unrolled or empty ones pass)."""
  for path in LAYER_LISTS:
    params = _replace_at(params, path, lambda node: node if is_layer_list(node) or not node else unstack(node))
  return params


def is_stacked(params: dict) -> bool | None:
  """Whether the tree's layer lists are stacked; None when it has none (e.g. depth 0, no VIN)."""
  for path in LAYER_LISTS:
    node = params
    for key in path:
      node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict) and node:
      return not is_layer_list(node)
  return None


def has_layer_axis(path) -> bool:
  """Whether the leaf at a jax tree path lies in a stacked layer list, so its axis 0 is the layer axis (FSDP
  must not split it). Works on params, EMA and optimizer states alike (their moments keep the params' keys)."""
  keys = [getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", None))) for entry in path]
  for i in range(len(keys) - 2):
    if tuple(keys[i:i + 2]) in LAYER_LISTS:
      return not (isinstance(keys[i + 2], int) or str(keys[i + 2]).isdigit())
  return False


def to_layout(params, target):
  """`params` converted to the layout of `target` (any tree of the same model: arrays, ShapeDtypeStructs,
  Orbax metadata): a layer list where `target` has one is unstacked or stacked to match; else unchanged."""
  if not isinstance(params, dict) or not isinstance(target, dict):
    return params
  source_list, target_list = is_layer_list(params), is_layer_list(target)
  if source_list and not target_list and target:
    return to_layout(stack(params), target)
  if target_list and not source_list and params:
    params = unstack(params)
  if target_list:
    return {k: to_layout(v, _layer(target, int(k))) if _has_layer(target, k) else v for k, v in params.items()}
  return {k: to_layout(v, target[k]) if k in target else v for k, v in params.items()}


def _has_layer(target: dict, k) -> bool:
  return int(k) in target or str(int(k)) in target


def convert(tree, target):
  """`tree` (jax arrays) in the layout of `target` (arrays or ShapeDtypeStructs), placed on the target's shardings
  by one jitted conversion; `tree` itself when the layouts agree."""
  if jax.tree.structure(tree) == jax.tree.structure(target):
    return tree
  shardings = [getattr(t, "sharding", None) for t in jax.tree.leaves(target)]
  out_shardings = None
  if all(s is not None for s in shardings):
    out_shardings = jax.tree.unflatten(jax.tree.structure(target), shardings)
  structure = jax.tree.map(lambda _: None, target)   # keys only: the target's arrays are not captured
  return jax.jit(lambda t: to_layout(t, structure), out_shardings=out_shardings)(tree)


def per_layer(tree):
  """`tree` (jax arrays) in the unrolled layout (a jitted unstack when it is stacked; else itself)."""
  if not is_stacked(tree):
    return tree
  return jax.jit(unstack_layers)(tree)
