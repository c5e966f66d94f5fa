"""The weight-free "patch" autoencoder: space-to-depth (and time-to-depth) of pixels in [-1, 1].

Latents are pixels rearranged: [B, T, H, W, 3] -> [B, T/tf, H/s, W/s, 3*s*s*tf], normalised as
(pixels - shift) * scale so that they have roughly zero mean and unit variance.
"""
from __future__ import annotations

import einops
import jax.numpy as jnp


class PatchAutoencoder:
  """Exact inverse pair: decode(encode(x)) == x. Exposes spatial_factor and temporal_factor."""

  def __init__(self, spatial_factor: int, temporal_factor: int = 1, scale: float = 1.0, shift: float = 0.0):
    self.spatial_factor = int(spatial_factor)
    self.temporal_factor = int(temporal_factor)
    self.scale = float(scale)
    self.shift = float(shift)

  @property
  def latent_channels(self) -> int:
    return 3 * self.spatial_factor ** 2 * self.temporal_factor

  def encode(self, pixels_BxTxHxWx3):
    """uint8 or float pixels -> float32 latents [B, T/tf, H/s, W/s, C]. uint8 maps to [-1, 1]."""
    x = pixels_BxTxHxWx3
    if x.dtype == jnp.uint8:
      x = x.astype(jnp.float32) / 127.5 - 1.0
    s, tf = self.spatial_factor, self.temporal_factor
    z = einops.rearrange(x, "b (t pt) (h ph) (w pw) c -> b t h w (pt ph pw c)", pt=tf, ph=s, pw=s)
    return (z.astype(jnp.float32) - self.shift) * self.scale

  def decode(self, latents_BxTxhxwxC):
    """Latents -> float pixels in [-1, 1]-ish [B, T*tf, h*s, w*s, 3] (not clipped)."""
    s, tf = self.spatial_factor, self.temporal_factor
    x = latents_BxTxhxwxC / self.scale + self.shift
    return einops.rearrange(x, "b t h w (pt ph pw c) -> b (t pt) (h ph) (w pw) c", pt=tf, ph=s, pw=s, c=3)


def to_uint8(pixels):
  """[-1, 1] floats -> uint8, clipped."""
  return jnp.clip(jnp.round((pixels + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
