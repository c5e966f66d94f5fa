"""An image autoencoder (e.g. the SD VAE) applied frame by frame to videos.

    ae = PerFrameAutoencoder(module, scale=0.18215, shift=0.0, frames_per_batch=16)
    z = ae.encode(frames)   # uint8 [B, T, H, W, 3] (or floats in [-1, 1]) -> float32 [B, T, H/f, W/f, c]
    x = ae.decode(z)        # -> float32 [B, T, H, W, 3] in [-1, 1]-ish (not clipped)

Latents are the posterior means, normalised as (mean - shift) * scale. Frames go through the module
`frames_per_batch` at a time (a `lax.map`), so memory is bounded by that many frames whatever the video length.
The module's weights are an argument of one jitted function per direction, not constants baked into it.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx


class PerFrameAutoencoder:
  temporal_factor = 1

  def __init__(self, module, *, scale: float, shift: float, frames_per_batch: int):
    self.graphdef, self.state = nnx.split(module)
    self.spatial_factor = int(module.spatial_factor)
    self.latent_channels = int(module.latent_channels)
    self.scale = float(scale)
    self.shift = float(shift)
    self.frames_per_batch = int(frames_per_batch)

  def encode(self, frames_BxTxHxWx3):
    """uint8 or float pixels [B, T, H, W, 3] -> float32 latents [B, T, H/f, W/f, c]."""
    x = jnp.asarray(frames_BxTxHxWx3)
    if x.dtype == jnp.uint8:
      x = x.astype(jnp.float32) / 127.5 - 1.0
    z = _over_frames(self.graphdef, self.state, x, "encode", self.frames_per_batch)
    return (z - self.shift) * self.scale

  def decode(self, latents_BxTxhxwxc):
    """Latents [B, T, h, w, c] -> float32 pixels [B, T, h*f, w*f, 3]."""
    z = jnp.asarray(latents_BxTxhxwxc, jnp.float32) / self.scale + self.shift
    return _over_frames(self.graphdef, self.state, z, "decode", self.frames_per_batch)


@functools.partial(jax.jit, static_argnames=("graphdef", "direction", "frames_per_batch"))
def _over_frames(graphdef, state, video_BxTx___, direction: str, frames_per_batch: int):
  """Runs the module's encoder (posterior mean) or decoder over every frame, `frames_per_batch` at a time."""
  module = nnx.merge(graphdef, state)
  b, t = video_BxTx___.shape[:2]
  frames = video_BxTx___.reshape(b * t, *video_BxTx___.shape[2:])
  n = frames.shape[0]
  groups = -(-n // frames_per_batch)
  padded = jnp.pad(frames, [(0, groups * frames_per_batch - n)] + [(0, 0)] * (frames.ndim - 1))
  padded = padded.reshape(groups, frames_per_batch, *frames.shape[1:])

  def one_group(x):
    if direction == "encode":
      return module.encode_moments(x)[0]
    return module.decode(x)

  out = jax.lax.map(one_group, padded)
  out = out.reshape(groups * frames_per_batch, *out.shape[2:])[:n]
  return out.reshape(b, t, *out.shape[1:]).astype(jnp.float32)
