"""A causal video VAE (the Wan 2.1 VAE, wan_vae.py) behind the autoencoder interface.

    ae = CausalVideoAutoencoder(module, scale=1.0, shift=0.0)
    z = ae.encode(frames)   # uint8 [B, 1 + tf k, H, W, 3] (or floats in [-1, 1]) -> float32 [B, 1 + k, H/f, W/f, c]
    x = ae.decode(z)        # [B, t, h, w, c] -> float32 pixels [B, 1 + tf (t - 1), H, W, 3], clipped to [-1, 1]

Unlike the per-frame and patch autoencoders, time is causal: the first latent frame holds the first pixel frame
alone and each later one the next `tf` (4) frames, so T pixel frames give 1 + (T - 1) / tf latent frames
(`vin_jax.config.latent_frames_of`). The module runs the video in temporal tiles with its causal cache carried
through a `lax.scan`, so memory does not grow with the video's length, for encoding and for decoding the VIN
sampler's long latents alike.

Latents are the posterior means in Wan's normalised space, (mean - latents_mean) / latents_std per channel (the
published statistics that the converted checkpoint carries), then (z - shift) * scale on top (1 and 0 by default).
The module's weights are an argument of one jitted function per direction, not constants baked into it.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class CausalVideoAutoencoder:
  causal = True

  def __init__(self, module, *, scale: float, shift: float):
    self.graphdef, self.state = nnx.split(module)
    self.spatial_factor = int(module.spatial_factor)
    self.temporal_factor = int(module.temporal_factor)
    self.latent_channels = int(module.latent_channels)
    self.scale = float(scale)
    self.shift = float(shift)
    self._mean = np.asarray(module.latents_mean, np.float32)
    self._std = np.asarray(module.latents_std, np.float32)

  def encode(self, frames_BxTxHxWx3):
    """uint8 or float pixels [B, 1 + tf k, H, W, 3] -> float32 latents [B, 1 + k, H/f, W/f, c]."""
    x = jnp.asarray(frames_BxTxHxWx3)
    if x.dtype == jnp.uint8:
      x = x.astype(jnp.float32) / 127.5 - 1.0
    mean = _run(self.graphdef, self.state, x, "encode")
    return ((mean - self._mean) / self._std - self.shift) * self.scale

  def decode(self, latents_BxTxhxwxc):
    """Latents [B, t, h, w, c] -> float32 pixels [B, 1 + tf (t - 1), h f, w f, 3]."""
    z = jnp.asarray(latents_BxTxhxwxc, jnp.float32) / self.scale + self.shift
    return _run(self.graphdef, self.state, z * self._std + self._mean, "decode")


@functools.partial(jax.jit, static_argnames=("graphdef", "direction"))
def _run(graphdef, state, video, direction: str):
  module = nnx.merge(graphdef, state)
  if direction == "encode":
    return module.encode_moments(video)[0]
  return module.decode(video)
