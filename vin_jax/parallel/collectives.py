"""Collective bytes of a compiled (SPMD-partitioned) HLO module, read from its text.

Used by benchmarks/communication.py (CPU meshes) and benchmarks/tpu_aot.py (TPU topologies). Each op is
counted once as written: a loop body (the layer scan) counts once, not once per iteration.
"""
from __future__ import annotations

import re

import numpy as np

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
_DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1, "f64": 8,
                "s64": 8, "u64": 8}
_SHAPE = re.compile(r"\b(f32|bf16|f16|s32|u32|pred|s8|u8|f64|s64|u64)\[([0-9,]*)\]")


_OP = re.compile(r"=\s*(?P<result>.*?)\s(?P<op>" + "|".join(KINDS) + r")(?P<start>-start)?\(")


def collective_bytes(hlo_text: str) -> dict[str, list[int]]:
  """{kind: [bytes of each op's result]} over the module's collectives (async pairs counted once)."""
  found = {k: [] for k in KINDS}
  for line in hlo_text.splitlines():
    match = _OP.search(line)
    if not match:
      continue
    total = 0
    for dtype, dims in _SHAPE.findall(match["result"]):
      total += int(np.prod([int(d) for d in dims.split(",") if d])) * _DTYPE_BYTES[dtype]
    if match["start"] and match["op"] in ("collective-permute", "all-gather"):
      total //= 2  # an async start op's result holds both its input and output buffers
    found[match["op"]].append(total)
  return found


def total_collective_bytes(hlo_text: str) -> int:
  return sum(sum(v) for v in collective_bytes(hlo_text).values())
