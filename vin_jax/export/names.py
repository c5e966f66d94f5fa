"""Nested param dicts <-> flat dotted names: {"dit": {"blocks": {3: {"attn": ...}}}} <-> "dit.blocks.3.attn.q.kernel".

Integer keys (the entries of nnx lists) become numbers in the name. Going back needs the target tree's
structure (`ModelDef.abstract_params()`), which says which keys are integers, so names are never parsed.
"""
from __future__ import annotations

from typing import Any

import jax

from vin_jax.export import ExportError


def dotted_name(path) -> str:
  """A jax tree path of dict keys -> "a.b.3.c"."""
  parts = []
  for entry in path:
    key = getattr(entry, "key", getattr(entry, "idx", None))
    if key is None:
      raise ExportError(f"parameter path {jax.tree_util.keystr(path)} has a non-dict level; params must be "
                        "nested dicts")
    key = str(key)
    if not key or "." in key:
      raise ExportError(f"parameter key {key!r} in {jax.tree_util.keystr(path)} cannot be part of a dotted name")
    parts.append(key)
  return ".".join(parts)


def flatten(tree) -> dict[str, Any]:
  """{dotted name: leaf}, in the tree's (sorted-key) order."""
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    flat[dotted_name(path)] = leaf
  return flat


def unflatten_like(target, flat: dict[str, Any]):
  """The tree of `target`'s structure with each leaf taken from `flat[dotted name]` (all names must exist)."""
  paths, treedef = jax.tree_util.tree_flatten_with_path(target)
  leaves = []
  for path, _ in paths:
    name = dotted_name(path)
    if name not in flat:
      raise ExportError(f"tensor {name!r} is missing")
    leaves.append(flat[name])
  return jax.tree_util.tree_unflatten(treedef, leaves)
