"""The real train step and sampler compile for a TPU v5p slice (libtpu, compile only: nothing runs), and
rematerialisation lowers the train step's compiled temporary memory. `benchmarks/tpu_aot.py` is the tool
measured here; each compile takes about half a minute, so the train rows are compiled once and shared."""
import importlib

import pytest

tpu_aot = importlib.import_module("benchmarks.tpu_aot")

# 32x32 frames: 64 tokens per latent frame, so activations (what remat trades) outweigh the fixed buffers.
TINY = ["--config=configs/tiny.py:test", "--topology=v5p:2x2x1", "--method=vin", "--set", "data.height=32",
        "--set", "data.width=32", "--cost=program"]


@pytest.fixture(scope="module")
def train_rows():
  rows = {}
  for remat in ("none", "full"):
    (rows[remat],) = tpu_aot.main(TINY + ["--what=train", "--latent_frames=32", "--videos_per_chip=2",
                                          "--set", f"model.remat={remat}"])
  return rows


def _check(row):
  assert row.fits, row
  assert row.argument_gib > 0 and row.temp_gib > 0 and row.total_gib >= row.temp_gib, row
  assert row.tflops_per_chip > 0, row


def test_the_tiny_train_step_compiles_for_a_v5p_slice(train_rows):
  for row in train_rows.values():
    assert (row.topology, row.what, row.latent_frames) == ("v5p:2x2x1", "train", 32)
    _check(row)


def test_the_tiny_sampler_compiles_for_a_v5p_slice_with_its_chunks_over_the_chips():
  (row,) = tpu_aot.main(TINY + ["--what=sample", "--latent_frames=16"])
  assert (row.what, row.latent_frames) == ("sample", 16)
  _check(row)


def test_remat_lowers_the_compiled_temporary_memory_of_the_train_step(train_rows):
  # Measured: 97 MiB without remat, 67 MiB with it (0.69).
  assert train_rows["full"].temp_gib < 0.8 * train_rows["none"].temp_gib, train_rows


def test_auto_cost_counts_the_attention_that_a_loop_hides():
  """`--cost=auto` (depth 1 and 2, einsum attention, extrapolated) counts what the program's own analysis
  misses: blocked attention's lax.map over query blocks is counted once. Full attention over 64 latent frames
  (2,048 tokens: two query blocks) on the tiny model; auto must equal the loop-free program's own count."""
  full = [a for a in TINY if a != "--cost=program" and a != "--method=vin"] + [
      "--method=full", "--what=train", "--latent_frames=64"]
  (auto,) = tpu_aot.main(full + ["--set", "model.attention=blocked", "--cost=auto"])
  (looped,) = tpu_aot.main(full + ["--set", "model.attention=blocked", "--cost=program"])
  (loop_free,) = tpu_aot.main(full + ["--set", "model.attention=einsum", "--cost=program"])
  assert auto.cost_from == "depth 1, 2, einsum" and looped.cost_from == "program"
  assert auto.tflops_per_chip > 1.2 * looped.tflops_per_chip, (auto, looped)
  assert abs(auto.tflops_per_chip - loop_free.tflops_per_chip) < 0.01 * loop_free.tflops_per_chip, (auto, loop_free)
