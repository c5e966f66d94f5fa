"""In shared context mode the sampler's collectives are the per-layer key/value halo (collective-permute),
the VIN's fixed-size combine (all-reduce) and nothing else: no all-gather; only the halo grows with the
context L; nothing grows with the video (compiled HLO of one sampler step on 4 of the simulated devices, all on 'chunk')."""
import importlib

from vin_jax.parallel.collectives import collective_bytes

communication = importlib.import_module("benchmarks.communication")


def _bytes(context_frames: int, num_chunks: int) -> dict:
  config = communication.bench_config(num_chunks, devices=4, context_mode="shared")
  config.chunking.inference_context_frames = context_frames
  return {kind: sum(sizes) for kind, sizes in collective_bytes(communication.sampler_text(config, num_chunks)).items()}


def test_shared_context_halo_is_the_only_collective_that_grows_with_the_context():
  short, long_context, long_video = _bytes(2, 4), _bytes(4, 4), _bytes(2, 8)
  for found in (short, long_context, long_video):
    assert found["all-gather"] == 0 and found["all-to-all"] == 0, found
  assert long_context["collective-permute"] > short["collective-permute"] > 0
  assert long_context["all-reduce"] == short["all-reduce"]
  assert long_video == short, (short, long_video)
