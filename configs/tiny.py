"""The CPU demo: 16x16 sprites, 8-frame chunks, a 4-layer DiT. Trains in about 6 minutes on 2 cores.

Beyond the paper's recipe (measured in docs/RESULTS.md): the network outputs x0, the context is half a
chunk, overlaps fuse at every step, and the chunks start from FreeNoise-rescheduled noise.

`--config=configs/tiny.py:test` shrinks it further for unit tests.
"""
import pathlib

from vin_jax import config as config_lib


def get_config(arg=None):
  c = config_lib.load_config_file(pathlib.Path(__file__).with_name("base.py"))
  variants = config_lib.parse_variants(arg)

  c.model.width = 96
  c.model.depth = 4
  c.model.num_heads = 4
  c.model.temporal_patch = 2       # halves the tokens (STIV); chunks and contexts are even
  c.vin.num_global_tokens = 8
  c.vin.width = 64
  c.vin.num_heads = 4
  c.vin.processor_depth = 1
  c.text.width = 32
  c.text.depth = 1
  c.text.num_heads = 2
  c.text.max_length = 48            # the whole caption at caption_detail 0

  c.chunking.chunk_frames = 8
  c.chunking.context_frames = 4     # half a chunk, like the paper's 8 (12 at inference) of 20
  c.chunking.inference_context_frames = 4
  c.chunking.keyframe_seconds = 0.5     # every 4 latent frames at 8 fps

  c.data.num_examples = 512
  c.data.num_frames = 32
  c.data.height = 16
  c.data.width = 16
  c.data.sprite_size = 6
  c.data.max_speed = 0.5
  c.data.batch_size = 8

  c.autoencoder.shift = -0.6   # sprite videos: pixel mean -0.62, std 0.38 in [-1, 1]
  c.autoencoder.scale = 2.5
  c.diffusion.objective = "flow"
  c.diffusion.network_output = "x0"   # predicting the noise-carrying velocity made the samples grainy
  c.train.steps = 1500
  c.train.learning_rate = 1e-3
  c.train.warmup_steps = 50
  c.train.ema_decay = 0.99
  c.train.log_every = 10
  c.train.checkpoint_every = 500

  c.sampling.num_steps = 20
  c.sampling.t_alpha = 0           # fuse the overlaps at every step: halves the boundary jump here
  # FreeNoise's rescheduled starting noise: the windows then agree on the sprite (identity 0.34 -> 0.70).
  c.sampling.noise = "rescheduled"
  c.sampling.num_chunks = 8
  c.sampling.num_samples = 2

  if variants.get("interpolate"):
    # STIV's temporal upsampler (beyond the VIN paper): every other latent frame given clean in training, so
    # `sample --interpolate=VIDEO` doubles a video's frame rate. One latent frame per token, so that t is per frame.
    c.diffusion.clean_every = 2
    c.model.temporal_patch = 1
  if variants.get("test"):
    # Unit tests: the same shapes' code paths at the smallest sizes.
    c.model.width = 32
    c.model.depth = 2
    c.model.num_heads = 2
    c.vin.width = 32
    c.vin.num_heads = 2
    c.vin.num_global_tokens = 4
    c.text.width = 16
    c.text.num_heads = 2
    c.chunking.chunk_frames = 4
    c.chunking.context_frames = 2
    c.chunking.inference_context_frames = 2
    c.data.num_examples = 16
    c.data.num_frames = 16
    c.data.height = 8
    c.data.width = 8
    c.data.sprite_size = 3
    c.data.batch_size = 2
    c.train.steps = 4
    c.train.warmup_steps = 1
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.sampling.num_steps = 4
    c.sampling.t_alpha = 2
    c.sampling.num_chunks = 4
    c.sampling.num_samples = 1
    c.sampling.freenoise_stride = 2
    c.sampling.noise = "independent"   # the tests build reference noise with sampler.initial_noise
  if variants.get("image"):
    # STIV's progressive training, stage 1 (beyond the VIN paper; applied after `test`): text-to-image on
    # single frames, no VIN. The video model (this config without the variant) starts from it with
    # `train --init_from`: the DiT's patch embedding and output layer are inflated to its temporal patch, the
    # VIN and the rest are new.
    c.model.temporal_patch = 1
    c.vin.enabled = False
    c.chunking.chunk_frames = 1
    c.chunking.context_frames = c.chunking.inference_context_frames = 0
    c.chunking.keyframe_seconds = 1.0 / c.data.fps
    c.data.bucket_chunks, c.data.bucket_weights = (1,), (1.0,)
    c.sampling.num_chunks, c.sampling.fusion = 1, "none"
  return c
