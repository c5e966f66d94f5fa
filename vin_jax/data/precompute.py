"""`python -m vin_jax.main precompute`: a frames data set -> its latents and T5 embeddings (vin_jax/data/latents.py).

Each split is encoded `examples_per_part` examples at a time into parts/<split>/part-NNNNNN.npz, each written
atomically, so an interrupted run resumes at the first missing part. When every part is there the records are
packed (TFDS ArrayRecord), the parts are deleted, and latent_stats.json records the measured mean and standard
deviation of the raw latents with the `autoencoder.shift` / `autoencoder.scale` that normalise them. An
example whose latents are not finite is skipped and counted. Run it on one host; `train` then reads the
records sharded per process, as it reads frames.
"""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
from tqdm import tqdm

from vin_jax import autoencoder as autoencoder_lib
from vin_jax import config as config_lib
from vin_jax import video_io
from vin_jax.data import builder as frames_builder
from vin_jax.data import latents as latents_lib
from vin_jax.evaluation import report
from vin_jax.text import conditioning

STATS_FILE = "latent_stats.json"


def precompute(config, workdir: str | None, *, data_dir: str | None = None, examples_per_part: int = 16) -> dict:
  """Builds the latents data set of `config` (data.latents on or off) unless it exists; returns the statistics."""
  data_dir = str(data_dir or config_lib.resolve_data_dir(config, workdir))
  target = latents_lib.Latents(config=latents_lib.latents_config_from(config, data_dir), data_dir=data_dir,
                               file_format=frames_builder.FILE_FORMAT)
  stats_path = pathlib.Path(target.data_dir) / STATS_FILE
  if target.is_prepared() and stats_path.is_file():
    print(f"latents already precomputed in {target.data_dir}", flush=True)
    return json.loads(stats_path.read_text())
  frames_config = latents_lib._frames_view(config)
  frames_builder.build_dataset(frames_config, data_dir)
  parts_dir = pathlib.Path(target.builder_config.parts_dir)
  autoencoder = autoencoder_lib.make_autoencoder(frames_config, normalized=False)
  counts = {}
  for split in latents_lib.SPLITS:
    source = frames_builder.data_source(frames_config, data_dir, split)
    counts[split] = _encode_split(config, source, split, parts_dir, autoencoder, examples_per_part)
  stats = {**_statistics(parts_dir / "train"), "examples": {s: c[0] for s, c in counts.items()},
           "skipped_non_finite": {s: c[1] for s, c in counts.items()}}
  (parts_dir / "COMPLETE").write_text(json.dumps(stats))
  target.download_and_prepare(file_format=frames_builder.FILE_FORMAT)
  report.write_json_atomic(stats_path, stats)
  shutil.rmtree(parts_dir, ignore_errors=True)
  print(f"latents of {sum(c[0] for c in counts.values())} examples in {target.data_dir} (skipped, not finite: "
        f"{stats['skipped_non_finite']}); measured: --config.autoencoder.shift={stats['shift']:.6g} "
        f"--config.autoencoder.scale={stats['scale']:.6g} (written to {stats_path})", flush=True)
  return stats


def _encode_split(config, source, split: str, parts_dir: pathlib.Path, autoencoder,
                  examples_per_part: int) -> tuple[int, int]:
  """Writes the missing parts of one split; returns (examples kept, examples skipped) over all its parts."""
  n = len(source)
  num_parts = -(-n // examples_per_part)
  done = [p for p in range(num_parts) if latents_lib.part_path(parts_dir, split, p).is_file()]
  done_examples = sum(min(examples_per_part, n - p * examples_per_part) for p in done)
  bar = tqdm(total=n, initial=done_examples, desc=f"precompute {split}", unit="video", dynamic_ncols=True)
  for p in range(num_parts):
    path = latents_lib.part_path(parts_dir, split, p)
    if path.is_file():
      continue
    indices = np.arange(p * examples_per_part, min(n, (p + 1) * examples_per_part))
    examples = [source[int(i)] for i in indices]
    z = np.asarray(autoencoder.encode(np.stack([e["frames"] for e in examples])), np.float32)  # [k, T', h, w, c]
    keep = np.isfinite(z).reshape(len(z), -1).all(axis=1)
    captions = [e["caption"].decode("utf-8", errors="replace") if isinstance(e["caption"], bytes)
                else str(e["caption"]) for e in examples]
    part = {"latents": z[keep], "captions": np.array(captions, dtype=object)[keep].astype(str),
            "source_index": indices[keep].astype(np.int64), "skipped": np.int64((~keep).sum())}
    if latents_lib.stores_text_embeddings(config):
      part["text_embedding"] = conditioning.encode_captions(config, captions)[keep].astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with video_io.atomic_output(path) as tmp, open(tmp, "wb") as f:
      np.savez(f, **part)
    bar.update(len(indices))
  bar.close()
  kept = skipped = 0
  for p in range(num_parts):
    with np.load(latents_lib.part_path(parts_dir, split, p)) as part:
      kept += len(part["source_index"])
      skipped += int(part["skipped"])
  return kept, skipped


def _statistics(train_parts: pathlib.Path) -> dict:
  """Mean and standard deviation of the raw train latents (overall and per channel), and the normalisation."""
  count, total, squares = 0, 0.0, 0.0
  for path in sorted(train_parts.glob("part-*.npz")):
    with np.load(path) as part:
      z = part["latents"].astype(np.float64)
    flat = z.reshape(-1, z.shape[-1])
    count += flat.shape[0]
    total = total + flat.sum(axis=0)
    squares = squares + (flat ** 2).sum(axis=0)
  if count == 0:
    raise ValueError(f"no finite latents in {train_parts}: the train split is empty or every example failed")
  mean_c = total / count
  std_c = np.sqrt(np.maximum(squares / count - mean_c ** 2, 0.0))
  mean = float(mean_c.mean())
  std = float(np.sqrt(np.maximum((squares.sum() / (count * len(mean_c))) - mean ** 2, 0.0)))
  return {"mean": mean, "std": std, "shift": mean, "scale": 1.0 / max(std, 1e-12),
          "per_channel_mean": mean_c.tolist(), "per_channel_std": std_c.tolist()}
