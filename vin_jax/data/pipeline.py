"""The grain input pipeline: global batch index -> this process's rows of that batch.

Batch `i` of a run is a pure function of (config, i): its length bucket, its examples and their temporal
crops are drawn from `config.seed` and `i` alone. So every JAX process computes the same bucket for batch `i`
and takes its own slice of rows, and resuming from `{"next_index": i}` (JSON) gives exactly the batches an
uninterrupted run would, even with a different number of processes.

A batch (for a bucket of N chunks, P = pixel_frames_per_chunk(config)):
  frames:      uint8 [B_local, N * P, H, W, 3]   a crop of N * P consecutive pixel frames of each video
  text_tokens: the captions as vin_jax.text.conditioning gives them: int32 byte tokens [B_local, Lt], or
               float32 T5 embeddings [B_local, Lt, E] (text.encoder "t5", or "precomputed": stored)
  num_chunks:  int, N (the same on all processes)
  micro:       float32 [B_local, 3] (fps, height, width) of each row, only with model.micro_conditions: fps is
               data.fps / k for a row read at temporal stride k (data.frame_strides); height, width the batch's
With data.resolutions each batch's frames come at one (H, W) of them, drawn per batch (scaled to cover and
centre-cropped from the stored data.height x data.width), so every size compiles once.
With data.latents (the precomputed data set, vin_jax/data/latents.py) `latents` replaces `frames`:
  latents:     float32 [B_local, N * F, h, w, c]  F = chunking.chunk_frames, normalised by autoencoder.shift/scale
"""
from __future__ import annotations

import functools
import pathlib
from typing import Any, Callable, Sequence

import grain
import numpy as np

from vin_jax import config as config_lib
from vin_jax import video_io
from vin_jax.data import builder
from vin_jax.text import conditioning

# Fixed salts keep the bucket/crop stream and the shuffle stream independent for the same config.seed.
_BATCH_SALT = 0xB0C4E7
_SHUFFLE_SALT = 0x5A1FF1E


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The order of the examples in one epoch: int64 [num_examples]."""
  return np.random.default_rng([seed, _SHUFFLE_SALT, epoch]).permutation(num_examples)


class BatchReader:
  """Random access to batches: `reader(i)` is this process's part of global batch i.

  Rows of global batch i are the examples at shuffled positions i * B + r for r in [0, B), where the shuffle
  is a fresh permutation of the split per epoch (position // num_examples). Process p of P owns the rows
  r in [p * B / P, (p + 1) * B / P).
  """

  def __init__(self, source: Sequence[dict], *, seed: int, batch_size: int, process_index: int,
               process_count: int, bucket_chunks: Sequence[int], bucket_weights: Sequence[float],
               frames_per_chunk: int, captions_to_text: Callable[[list[str]], np.ndarray],
               video_key: str = "frames", normalize: Callable[[np.ndarray], np.ndarray] | None = None,
               stored_text_key: str | None = None, frame_strides: Sequence[int] = (1,),
               micro: tuple[float, float, float] | None = None, sizes: Sequence[tuple[int, int]] = ()):
    """`video_key` is the stored video ("frames" or "latents"), cropped to whole chunks of `frames_per_chunk`
    frames and passed through `normalize`; the text is `captions_to_text(captions)`, or the stored array
    `stored_text_key` of each example when given. `frame_strides`: each row reads every k-th frame of its crop,
    k drawn from these per row (frame-rate augmentation). `micro`: (fps, height, width) of a stride-1 row; when
    given, batches carry "micro" (the fps divided by each row's stride). `sizes`: (height, width) pixel sizes,
    one drawn per batch, that the frames are rescaled to (and that "micro" then names); (): as stored."""
    if batch_size % process_count:
      raise ValueError(f"data.batch_size={batch_size} must be divisible by the process count {process_count}")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")
    if len(source) == 0:
      raise ValueError("the data split is empty")
    weights = np.asarray(bucket_weights, np.float64)
    if len(weights) != len(bucket_chunks) or (weights < 0).any() or weights.sum() <= 0:
      raise ValueError(f"data.bucket_weights={tuple(bucket_weights)} must be one non-negative weight per bucket "
                       f"of data.bucket_chunks={tuple(bucket_chunks)}, not all zero")
    self._source = source
    self._seed = int(seed)
    self._num_examples = len(source)
    self.batch_size = batch_size
    self.local_batch_size = batch_size // process_count
    self._first_row = process_index * self.local_batch_size
    self._bucket_chunks = tuple(int(n) for n in bucket_chunks)
    self._cumulative = np.cumsum(weights) / weights.sum()
    self._frames_per_chunk = frames_per_chunk
    self._captions_to_text = captions_to_text
    self._video_key = video_key
    self._normalize = normalize
    self._stored_text_key = stored_text_key
    self._strides = tuple(int(k) for k in frame_strides)
    if not self._strides or min(self._strides) < 1:
      raise ValueError(f"data.frame_strides={tuple(frame_strides)} must be positive integers")
    self._micro = micro
    self._sizes = tuple((int(h), int(w)) for h, w in sizes)
    if sizes and video_key != "frames":
      raise ValueError("data.resolutions rescales pixel frames; precomputed latents have one size")

  def _plan(self, batch_index: int) -> tuple[int, np.ndarray, np.ndarray, tuple[int, int] | None]:
    """(num_chunks, crop offsets of all B global rows as fractions [B], their temporal strides int64 [B], the
    batch's (height, width) or None for the stored size); identical on all processes."""
    rng = np.random.default_rng([self._seed, _BATCH_SALT, batch_index])
    bucket = int(np.searchsorted(self._cumulative, rng.random(), side="right"))
    num_chunks = self._bucket_chunks[min(bucket, len(self._bucket_chunks) - 1)]
    # The crop length is unknown to the rng before the bucket, so offsets are drawn as fractions.
    fractions = rng.random(self.batch_size)
    # Drawn last and only when there is a choice: one stride keeps the batches of runs without it.
    strides = (rng.choice(np.asarray(self._strides), self.batch_size) if len(self._strides) > 1 else
               np.full(self.batch_size, self._strides[0]))
    # Drawn after the strides and only when there is a choice, for the same reason.
    size = (self._sizes[int(rng.integers(len(self._sizes)))] if len(self._sizes) > 1 else
            (self._sizes[0] if self._sizes else None))
    return num_chunks, fractions, strides.astype(np.int64), size

  def num_chunks(self, batch_index: int) -> int:
    """The bucket (chunks per video) of global batch `batch_index`."""
    return self._plan(batch_index)[0]

  def example_indices(self, batch_index: int) -> np.ndarray:
    """Indices into the split of this process's rows of batch `batch_index`: int64 [B_local]."""
    positions = batch_index * self.batch_size + self._first_row + np.arange(self.local_batch_size)
    epochs, within = np.divmod(positions, self._num_examples)
    return np.array([_epoch_permutation(self._seed, int(e), self._num_examples)[k]
                     for e, k in zip(epochs, within)])

  def __call__(self, batch_index: int) -> dict[str, Any]:
    batch_index = int(batch_index)
    num_chunks, fractions, strides, size = self._plan(batch_index)
    clip_frames = num_chunks * self._frames_per_chunk
    videos, captions, stored_text, row_strides = [], [], [], []
    for row, example_index in enumerate(self.example_indices(batch_index)):
      example = self._source[int(example_index)]
      video = example[self._video_key]  # uint8 [T, H, W, 3] frames or float32 [T', h, w, c] latents
      k = int(strides[self._first_row + row])
      span = (clip_frames - 1) * k + 1
      if video.shape[0] < span:
        raise ValueError(f"data.num_frames: stored videos have {video.shape[0]} {self._video_key}, the bucket "
                         f"of {num_chunks} chunks at temporal stride {k} (data.frame_strides) needs {span}")
      offset = int(fractions[self._first_row + row] * (video.shape[0] - span + 1))
      clip = video[offset:offset + span:k]
      videos.append(clip if size is None else video_io.resize_frames(clip, *size))
      row_strides.append(k)
      captions.append(example["caption"])
      if self._stored_text_key:
        stored_text.append(example[self._stored_text_key])
    video = np.stack(videos)
    batch = {
        self._video_key: self._normalize(video) if self._normalize else video,
        "text_tokens": np.stack(stored_text) if self._stored_text_key else self._captions_to_text(captions),
        "num_chunks": num_chunks,
    }
    if self._micro is not None:
      fps, height, width = self._micro
      height, width = size or (height, width)
      batch["micro"] = np.array([[fps / k, height, width] for k in row_strides], np.float32)
    return batch


class TrainIterator:
  """An endless iterator of batches whose state is a JSON-serialisable dict ({"next_index": global batch})."""

  def __init__(self, dataset: grain.IterDataset, reader: BatchReader):
    self.reader = reader
    self._iterator = iter(dataset)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, Any]:
    return next(self._iterator)

  def get_state(self) -> dict[str, Any]:
    return dict(self._iterator.get_state())

  def set_state(self, state: dict[str, Any]) -> None:
    if "next_index" not in state:
      raise ValueError(f"data iterator state {state!r} has no 'next_index' (not saved by this pipeline?)")
    self._iterator.set_state({**state, "next_index": int(state["next_index"])})


def _video_and_text(config) -> dict[str, Any]:
  """BatchReader's video and text arguments for frames or (data.latents) precomputed latents."""
  text = functools.partial(conditioning.encode_captions, config)
  if not config.data.get("latents", False):
    return {"frames_per_chunk": config_lib.pixel_frames_per_chunk(config), "captions_to_text": text}
  shift, scale = float(config.autoencoder.shift), float(config.autoencoder.scale)
  return {"frames_per_chunk": config.chunking.chunk_frames, "captions_to_text": text, "video_key": "latents",
          "normalize": lambda z: ((z - shift) * scale).astype(np.float32),
          "stored_text_key": "text_embedding" if config.text.encoder == "precomputed" else None}


def micro_of(config) -> tuple[float, float, float] | None:
  """(data.fps, data.height, data.width) of a stride-1 row for a model with model.micro_conditions, else None."""
  if not config.model.get("micro_conditions", False):
    return None
  return float(config.data.fps), float(config.data.height), float(config.data.width)


def make_train_iterator(config, data_dir: str | pathlib.Path, *, process_index: int | None = None,
                        process_count: int | None = None, split: str = "train",
                        num_threads: int = 1) -> TrainIterator:
  """Endless batches of `split` for this JAX process (see the module docstring for the batch format).

  `process_index` / `process_count` default to grain's ShardByJaxProcess (jax.process_index() / count);
  tests pass them to simulate several hosts. `num_threads` reads ahead in background threads (0: no read-ahead).
  The data set must already be built (vin_jax.data.builder.build_dataset).
  """
  if process_index is None or process_count is None:
    shard = grain.sharding.ShardByJaxProcess()
    process_index = shard.shard_index if process_index is None else process_index
    process_count = shard.shard_count if process_count is None else process_count
  reader = BatchReader(
      builder.data_source(config, data_dir, split), seed=config.seed, batch_size=config.data.batch_size,
      process_index=process_index, process_count=process_count, bucket_chunks=config.data.bucket_chunks,
      bucket_weights=config.data.bucket_weights, frame_strides=tuple(config.data.get("frame_strides", (1,))),
      micro=micro_of(config), sizes=tuple(config.data.get("resolutions", ())), **_video_and_text(config))
  # An "endless" range of global batch indices; to_iter_dataset keeps the next index as the iterator state.
  batches = grain.MapDataset.range(0, 2 ** 62).map(reader)
  read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(1, 2 * num_threads))
  return TrainIterator(batches.to_iter_dataset(read_options), reader)
