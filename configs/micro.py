"""CPU ablations: small enough to train several models in an hour on 2 cores, large enough to measure.

Follows the calibration in DESIGN.md section 6: an easy data set (one big slow sprite, low resolution), more and
shorter chunks, little context, and the first frame given clean so identity can be checked at the last chunk.
"""
import pathlib

from vin_jax import config as config_lib


def get_config(arg=None):
  c = config_lib.load_config_file(pathlib.Path(__file__).with_name("tiny.py"))
  del arg
  c.model.width = 96
  c.model.depth = 4
  c.model.num_heads = 4
  c.model.temporal_patch = 1       # context lengths 2 / 3 are odd
  c.vin.num_global_tokens = 16
  c.vin.width = 96
  c.vin.num_heads = 4
  c.vin.processor_depth = 2

  c.chunking.chunk_frames = 8
  c.chunking.context_frames = 2
  # The paper extends context 8 -> 12 (x1.5) at inference; scaled here: 2 -> 3.
  c.chunking.inference_context_frames = 3
  c.chunking.keyframe_seconds = 1.0     # every 8 latent frames at 8 fps: one keyframe per chunk

  c.data.num_examples = 1024
  c.data.num_frames = 32
  c.diffusion.first_frame_cond_prob = 0.5
  c.train.steps = 1500
  c.sampling.num_steps = 25
  c.sampling.t_alpha = 10
  c.sampling.num_chunks = 8
  c.sampling.num_samples = 16
  return c
