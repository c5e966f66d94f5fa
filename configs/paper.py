"""The paper's settings (VIN, ICCV 2025): a TPU-pod config, not for CPUs.

512 global tokens; a 4-block, 32-head processor; chunks of 20 latent frames with 8 context frames in training
and 12 at inference; keyframes every 1.0 s; 50 steps with early fusion (t_alpha = 20); 192x320; training
lengths of 20/40/80 latent frames; T5-XXL text embeddings, precomputed.

The autoencoder is STIV's per-frame SD VAE (sd-vae-ft-ema: x8 spatially, 4 channels), converted with
`python -m vin_jax.main convert --kind=sd_vae`. The paper's 3D VAE maps 16 pixel frames at 16 fps to 5 latent
frames; at data.fps = 5 the per-frame VAE gives the same latent timeline (5 latent frames per second), so the
chunks, contexts and keyframe strides (5 latent frames per 1.0 s) are the paper's. (A choice of ours: the
paper's 3D VAE is not available yet.)

    precompute:  --config=configs/paper.py --config.autoencoder.weights=SD_VAE --config.text.t5_dir=T5 \
                 --config.data.video_dir=VIDEOS      (then train with --config.data.latents=True)

`configs/paper.py:wan` swaps in the Wan 2.1 causal 3D VAE at 20 fps (same latent timeline; see `_wan`), and
`configs/paper.py:smoke,wan` is its CPU-size smoke run.

`configs/paper.py:smoke` keeps this structure (VIN with keyframes, chunk contexts, eps objective, linear
schedule, early fusion, per-frame SD VAE, precomputed T5) at a size a CPU trains in seconds: sprites of 32x32,
4-frame chunks, a 2-block DiT. Its autoencoder.weights and text.t5_dir are the user's (the tests convert random
Hugging Face checkpoints).
"""
import pathlib

from vin_jax import config as config_lib


def get_config(arg=None):
  c = config_lib.load_config_file(pathlib.Path(__file__).with_name("base.py"))
  variants = config_lib.parse_variants(arg)
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

  c.autoencoder.kind = "sd_vae"             # per frame; autoencoder.weights = the `convert --kind=sd_vae` output
  c.autoencoder.spatial_factor = 8
  c.autoencoder.temporal_factor = 1.0
  c.autoencoder.latent_channels = 4
  c.autoencoder.scale = 0.18215             # SD's; `precompute` measures the data's (latent_stats.json)

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
  c.data.fps = 5.0                          # the 3D VAE's latent rate (16 fps / 3.2), see the docstring
  c.data.num_frames = 80                    # 80 latent frames
  c.data.bucket_chunks = (1, 2, 4)          # 20 / 40 / 80 latent frames
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
  if variants.pop("smoke", False):
    _smoke(c)
  if variants.pop("wan", False):
    _wan(c)
  if variants:
    raise config_lib.ConfigError(f"configs/paper.py: unknown variant(s) {sorted(variants)}; the variants are "
                                 "'smoke' and 'wan' (they combine: 'smoke,wan')")
  return c


def _wan(c):
  """The 3D-VAE choice: the Wan 2.1 VAE (`convert --kind=wan_vae`; x8 spatially, causal x4 in time, 16 channels).

  At data.fps = 20 it gives the paper's latent timeline, 5 latent frames a second, so chunks, contexts and
  keyframe strides keep their values in latent frames. Stored clips are 1 + 4 (t - 1) pixel frames for t latent
  frames (the first latent frame holds one pixel frame); training needs precomputed latents (data.latents=True).
  A choice of ours: the paper's own 3D VAE (16 frames at 16 fps -> 5 latent frames) is not public.
  """
  latent_frames = int(c.data.num_frames / c.autoencoder.temporal_factor)   # the per-frame setting's
  c.autoencoder.kind = "wan_vae"
  c.autoencoder.spatial_factor = 8
  c.autoencoder.temporal_factor = 4.0
  c.autoencoder.latent_channels = 16
  c.autoencoder.scale = 1.0                 # the VAE applies Wan's per-channel latents_mean/std itself
  c.data.fps = c.data.fps * 4.0             # 20 fps: 5 latent frames a second, as at 5 fps per frame
  c.data.num_frames = 1 + 4 * (latent_frames - 1)


def _smoke(c):
  """The paper's structure at CPU size (see the module docstring)."""
  c.model.width, c.model.depth, c.model.num_heads = 64, 2, 2
  c.model.dtype = "float32"
  c.vin.num_global_tokens, c.vin.width, c.vin.num_heads, c.vin.processor_depth = 16, 64, 2, 1
  c.chunking.chunk_frames = 4
  c.chunking.context_frames = 2             # the paper's 8 / 12 of 20, at 4-frame chunks
  c.chunking.inference_context_frames = 2
  c.chunking.keyframe_seconds = 0.4         # every 2 latent frames at 5 fps
  c.text.precomputed_dim = 32               # the tests' tiny T5; T5-XXL is 4096
  c.text.max_length = 16
  c.text.width = 64
  c.text.num_heads = 2
  c.text.depth = 1
  c.autoencoder.frames_per_batch = 8
  c.autoencoder.scale = 1.0
  c.sampling.num_steps = 4
  c.sampling.t_alpha = 2
  c.sampling.num_chunks = 4
  c.sampling.num_samples = 2
  c.data.name = "sprites"
  c.data.height = c.data.width = 32
  c.data.num_examples = 16
  c.data.num_frames = 16
  c.data.bucket_chunks = (1, 2)
  c.data.bucket_weights = (1.0, 1.0)
  c.data.batch_size = 2
  c.data.validation_clips = 2
  c.train.steps = 2
  c.train.warmup_steps = 0
  c.train.ema_decay = 0.9
  c.train.checkpoint_every = 2
  c.train.log_every = 1
  c.mesh.data = 1
