"""Metrics to WORKDIR/metrics.jsonl (one JSON object per logged step) and TensorBoard; a progress bar."""
from __future__ import annotations

import json
import os
import pathlib

from tqdm import tqdm


class MetricsLog:

  def __init__(self, workdir: str | pathlib.Path, *, enabled: bool = True):
    self.enabled = enabled
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self._tb = None
    self._tb_dir = pathlib.Path(workdir) / "tensorboard"

  def truncate_after(self, step: int) -> None:
    """Drops records past `step`: a resumed run re-logs them, so the file reads as one uninterrupted run."""
    if not self.enabled or not self.path.exists():
      return
    kept = [line for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    tmp = self.path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, self.path)

  def write(self, record: dict) -> None:
    if not self.enabled:
      return
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is None:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(str(self._tb_dir))
    for key, value in record.items():
      if key != "step" and isinstance(value, (int, float)):
        self._tb.add_scalar(key, value, record["step"])

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read(workdir: str | pathlib.Path) -> list[dict]:
  path = pathlib.Path(workdir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def progress_bar(start: int, total: int, *, enabled: bool = True, desc: str = "train"):
  return tqdm(initial=start, total=total, desc=desc, disable=not enabled, dynamic_ncols=True,
              mininterval=1.0)
