import json

import numpy as np
import pytest

from vin_jax import config as config_lib
from vin_jax import video_io
from vin_jax.data import builder, pipeline
from vin_jax.text import tokenizer


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x["num_chunks"] == y["num_chunks"]
    np.testing.assert_array_equal(x["frames"], y["frames"])
    np.testing.assert_array_equal(x["text_tokens"], y["text_tokens"])


def test_batch_format_and_crops(config, data_dir):
  source = builder.data_source(config, data_dir, "train")
  it = pipeline.make_train_iterator(config, data_dir, process_index=0, process_count=1)
  per_chunk = config_lib.pixel_frames_per_chunk(config)
  seen = set()
  for i in range(12):
    batch = next(it)
    n = batch["num_chunks"]
    seen.add(n)
    assert n in config.data.bucket_chunks
    assert batch["frames"].shape == (config.data.batch_size, n * per_chunk, config.data.height,
                                     config.data.width, 3)
    assert batch["frames"].dtype == np.uint8
    assert batch["text_tokens"].shape == (config.data.batch_size, config.text.max_length)
    assert batch["text_tokens"].dtype == np.int32
    for row, index in enumerate(it.reader.example_indices(i)):
      example = source[int(index)]
      # The row is a crop of consecutive frames of its example, and the tokens are its caption.
      starts = [t for t in range(config.data.num_frames - n * per_chunk + 1)
                if np.array_equal(example["frames"][t:t + n * per_chunk], batch["frames"][row])]
      assert starts, (i, row)
      assert tokenizer.detokenize(batch["text_tokens"][row:row + 1])[0] == (
          example["caption"].decode()[:config.text.max_length])
  assert seen == set(config.data.bucket_chunks)


def test_one_epoch_visits_every_example_once(config, data_dir):
  it = pipeline.make_train_iterator(config, data_dir, process_index=0, process_count=1)
  per_epoch = config.data.num_examples // config.data.batch_size
  for epoch in range(2):
    indices = np.concatenate([it.reader.example_indices(epoch * per_epoch + i) for i in range(per_epoch)])
    assert sorted(indices.tolist()) == list(range(config.data.num_examples))


def test_bucket_proportions(config, data_dir):
  config.data.bucket_weights = (1.0, 1.0, 2.0)
  it = pipeline.make_train_iterator(config, data_dir, process_index=0, process_count=1)
  num_batches = 400
  counts = {n: 0 for n in config.data.bucket_chunks}
  for batch in take(it, num_batches):
    counts[batch["num_chunks"]] += 1
  for n, p in zip(config.data.bucket_chunks, (0.25, 0.25, 0.5)):
    sigma = np.sqrt(num_batches * p * (1 - p))
    assert abs(counts[n] - num_batches * p) < 4 * sigma, counts


@pytest.mark.parametrize("resumed_threads", [0, 2])
def test_resume_from_json_state(config, data_dir, resumed_threads):
  it = pipeline.make_train_iterator(config, data_dir, process_index=0, process_count=1, num_threads=1)
  take(it, 5)
  state = json.loads(json.dumps(it.get_state()))
  expected = take(it, 6)
  resumed = pipeline.make_train_iterator(config, data_dir, process_index=0, process_count=1,
                                         num_threads=resumed_threads)
  take(resumed, 2)  # a different position, overwritten by set_state
  resumed.set_state(state)
  assert_same_batches(take(resumed, 6), expected)


def test_processes_split_the_global_batch(config, data_dir):
  config.data.batch_size = 4
  whole = take(pipeline.make_train_iterator(config, data_dir, process_index=0, process_count=1), 8)
  parts = [take(pipeline.make_train_iterator(config, data_dir, process_index=p, process_count=2), 8)
           for p in range(2)]
  for b, (first, second) in enumerate(zip(*parts)):
    assert first["frames"].shape[0] == second["frames"].shape[0] == 2
    joined = {"num_chunks": first["num_chunks"],
              **{k: np.concatenate([first[k], second[k]]) for k in ("frames", "text_tokens")}}
    assert second["num_chunks"] == first["num_chunks"]
    assert_same_batches([joined], [whole[b]])


def test_batch_size_must_split_over_processes(config, data_dir):
  with pytest.raises(ValueError, match="data.batch_size=2"):
    pipeline.make_train_iterator(config, data_dir, process_index=0, process_count=3)


def test_default_sharding_is_the_jax_process(config, data_dir):
  batch = next(pipeline.make_train_iterator(config, data_dir))
  assert batch["frames"].shape[0] == config.data.batch_size


def _labelled_one_chunk_batches(config, data_dir, **data_fields):
  """(a validated copy of `config` with `data_fields`, one-chunk batches and model.micro_conditions; its train
  split; its one-process batch iterator)."""
  labelled = config.copy_and_resolve_references()
  for field, value in data_fields.items():
    labelled.data[field] = value
  labelled.data.bucket_chunks, labelled.data.bucket_weights = (1,), (1.0,)
  labelled.model.micro_conditions = True
  config_lib.validate(labelled)
  return (labelled, builder.data_source(labelled, data_dir, "train"),
          pipeline.make_train_iterator(labelled, data_dir, process_index=0, process_count=1))


def test_frame_strides_read_every_kth_frame_and_label_the_fps(config, data_dir):
  """data.frame_strides=(1, 2): each row is every k-th frame of its example from some offset, k per row; with
  model.micro_conditions the batch's "micro" row is (data.fps / k, height, width). One stride, (1,), keeps
  the batches of a run without the option."""
  strided, source, it = _labelled_one_chunk_batches(config, data_dir, frame_strides=(1, 2))
  clip = config_lib.pixel_frames_per_chunk(strided)
  seen = set()
  for i in range(6):
    batch = next(it)
    assert batch["micro"].shape == (strided.data.batch_size, 3) and batch["micro"].dtype == np.float32
    for row, index in enumerate(it.reader.example_indices(i)):
      frames = source[int(index)]["frames"]
      fps, height, width = batch["micro"][row]
      k = int(round(strided.data.fps / fps))
      seen.add(k)
      assert (height, width) == (strided.data.height, strided.data.width)
      assert any(np.array_equal(frames[s:s + (clip - 1) * k + 1:k], batch["frames"][row])
                 for s in range(frames.shape[0] - (clip - 1) * k)), (i, row, k)
  assert seen == {1, 2}
  plain = config.copy_and_resolve_references()
  plain.data.frame_strides = (1,)
  assert_same_batches(take(pipeline.make_train_iterator(plain, data_dir, process_index=0, process_count=1), 4),
                      take(pipeline.make_train_iterator(config, data_dir, process_index=0, process_count=1), 4))


def test_frame_strides_are_validated(config):
  bad = config.copy_and_resolve_references()
  bad.data.frame_strides = (1, 0)
  with pytest.raises(config_lib.ConfigError, match="data.frame_strides"):
    config_lib.validate(bad)
  long = config.copy_and_resolve_references()
  long.data.frame_strides = (1, 50)
  with pytest.raises(config_lib.ConfigError, match="largest of data.frame_strides"):
    config_lib.validate(long)
  fps = config.copy_and_resolve_references()
  fps.sampling.fps = 4.0
  with pytest.raises(config_lib.ConfigError, match="sampling.fps"):
    config_lib.validate(fps)


def test_resolutions_draw_one_size_per_batch_and_label_it(config, data_dir):
  """data.resolutions=((8, 8), (4, 8)): every batch comes at one of the sizes, each row its crop of the stored
  8x8 frames scaled to cover and centre-cropped, and "micro" names the batch's size. One size equal to the
  stored one keeps the batches of a run without the option."""
  mixed, source, it = _labelled_one_chunk_batches(config, data_dir, resolutions=((8, 8), (4, 8)))
  clip = config_lib.pixel_frames_per_chunk(mixed)
  seen = set()
  for i in range(8):
    batch = next(it)
    size = batch["frames"].shape[2:4]
    seen.add(size)
    assert size in mixed.data.resolutions and batch["frames"].dtype == np.uint8
    assert (batch["micro"][:, 1:] == np.array(size, np.float32)).all()
    for row, index in enumerate(it.reader.example_indices(i)):
      frames = source[int(index)]["frames"]
      assert any(np.array_equal(video_io.resize_frames(frames[s:s + clip], *size), batch["frames"][row])
                 for s in range(frames.shape[0] - clip + 1)), (i, row, size)
  assert seen == {(8, 8), (4, 8)}
  same = config.copy_and_resolve_references()
  same.data.resolutions = ((8, 8),)
  assert_same_batches(take(pipeline.make_train_iterator(same, data_dir, process_index=0, process_count=1), 4),
                      take(pipeline.make_train_iterator(config, data_dir, process_index=0, process_count=1), 4))


@pytest.mark.parametrize("field, value, match", [
    ("data.resolutions", ((8, 8), (6, 8)), r"data.resolutions.*\(6, 8\).*divisible by .* = 4"),
    ("data.resolutions", ((8,),), r"data.resolutions.*\(height, width\)"),
    ("sampling.resolution", (8, 0), r"sampling.resolution=\(8, 0\)"),
])
def test_resolutions_are_validated(config, field, value, match):
  bad = config_lib.override(config.copy_and_resolve_references(), {field: value})
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(bad)
  latents = config_lib.override(config.copy_and_resolve_references(),
                                {"data.resolutions": ((8, 8), (4, 8)), "data.latents": True})
  with pytest.raises(config_lib.ConfigError, match="data.resolutions.*precomputed latents"):
    config_lib.validate(latents)
