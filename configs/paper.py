"""The paper's settings (VIN, ICCV 2025): a TPU-pod config, not for CPUs.

512 global tokens; a 4-block, 32-head processor; chunks of 20 latent frames with 8 context frames in training
and 12 at inference; keyframes every 1.0 s; 50 steps with early fusion (t_alpha = 20); 192x320 at 16 fps;
a 3D VAE mapping 16 pixel frames to 5 latent frames (x8 spatially); training lengths of 20/40/80 latent frames.
"""
import pathlib

from vin_jax import config as config_lib


def get_config(arg=None):
  c = config_lib.load_config_file(pathlib.Path(__file__).with_name("base.py"))
  del arg
  c.model.width = 1152          # Open-Sora-like latent DiT
  c.model.depth = 28
  c.model.num_heads = 16
  c.model.patch_size = 2
  c.model.temporal_patch = 1
  c.model.dtype = "bfloat16"
  c.model.scan_layers = True    # 28 blocks compile as one scanned layer
  c.model.remat = "full"         # recompute each block in the backward pass: the paper train step fits a v5p chip

  c.vin.num_global_tokens = 512
  c.vin.width = 4096
  c.vin.num_heads = 32
  c.vin.processor_depth = 4

  c.chunking.chunk_frames = 20
  c.chunking.context_frames = 8
  c.chunking.inference_context_frames = 12
  c.chunking.keyframe_seconds = 1.0

  c.autoencoder.kind = "vae3d"
  c.autoencoder.spatial_factor = 8
  c.autoencoder.temporal_factor = 16 / 5    # 16 pixel frames -> 5 latent frames
  c.autoencoder.latent_channels = 4

  c.text.encoder = "precomputed"
  c.text.precomputed_dim = 4096             # T5-XXL
  c.text.max_length = 120
  c.text.width = 1152

  c.diffusion.objective = "eps"
  c.diffusion.schedule = "linear"

  c.sampling.num_steps = 50
  c.sampling.fusion = "early"
  c.sampling.t_alpha = 20
  c.sampling.guidance_scale = 7.5
  c.sampling.num_chunks = 16

  c.data.height = 192
  c.data.width = 320
  c.data.fps = 16.0
  c.data.num_frames = 256                   # 80 latent frames
  c.data.bucket_chunks = (1, 2, 4)          # 20 / 40 / 80 latent frames = 64 / 128 / 256 pixel frames
  c.data.batch_size = 64
  c.data.name = "video_folder"

  c.train.steps = 100_000
  c.train.learning_rate = 1e-4
  c.train.warmup_steps = 1000
  c.train.ema_decay = 0.9999
  c.train.checkpoint_every = 1000

  # Training mixes 1-chunk videos, which cannot be split over chunk devices: shard the batch in training and
  # the chunks at sampling (`--config.mesh.chunk=16 --config.mesh.data=1` for one 16-chunk video per slice).
  c.mesh.data = 16
  c.mesh.chunk = 1
  return c
