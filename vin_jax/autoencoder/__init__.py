"""Autoencoders behind one interface, chosen by `autoencoder.kind`:

    ae = make_autoencoder(config)
    z = ae.encode(frames)   # uint8 [B, T, H, W, 3] (or floats in [-1, 1]) -> float32 [B, T/tf, H/s, W/s, c]
    x = ae.decode(z)        # -> float32 pixels [B, T, H, W, 3] in [-1, 1]-ish; `to_uint8` clips and rounds

Each exposes `spatial_factor` (s), `temporal_factor` (tf), `latent_channels` (c), `scale` and `shift`
(latents = (raw - shift) * scale). Kinds:
  patch    weight-free space-to-depth (vin_jax/autoencoder/patch.py)
  sd_vae   the Stable Diffusion VAE frame by frame (sd_vae.py, per_frame.py), weights from `convert --kind=sd_vae`
"""
from __future__ import annotations

import functools

from vin_jax.autoencoder.patch import PatchAutoencoder, to_uint8

__all__ = ["PatchAutoencoder", "make_autoencoder", "to_uint8"]

KINDS = ("patch", "sd_vae")


def make_autoencoder(config, *, normalized: bool = True):
  """The autoencoder of `config.autoencoder`. `normalized=False` leaves out shift and scale (raw outputs, for
  measuring their statistics)."""
  ae = config.autoencoder
  scale, shift = (float(ae.scale), float(ae.shift)) if normalized else (1.0, 0.0)
  if ae.kind == "patch":
    return PatchAutoencoder(ae.spatial_factor, int(round(ae.temporal_factor)), scale, shift)
  if ae.kind == "sd_vae":
    from vin_jax.autoencoder.per_frame import PerFrameAutoencoder
    module = _load_sd_vae(str(ae.weights), ae.get("dtype", "float32"))
    checks = {"autoencoder.spatial_factor": module.spatial_factor, "autoencoder.latent_channels": module.latent_channels}
    for field, actual in checks.items():
      if int(ae[field.split(".")[1]]) != actual:
        from vin_jax.config import ConfigError
        raise ConfigError(f"{field}={ae[field.split('.')[1]]!r}, but the converted VAE at autoencoder.weights="
                          f"{ae.weights!r} has {actual}")
    return PerFrameAutoencoder(module, scale=scale, shift=shift, frames_per_batch=int(ae.frames_per_batch))
  raise ValueError(f"autoencoder.kind={ae.kind!r} must be one of {KINDS}")


@functools.lru_cache(maxsize=2)
def _load_sd_vae(weights_dir: str, dtype: str):
  import jax.numpy as jnp
  from vin_jax import convert
  from vin_jax.config import ConfigError
  if not weights_dir:
    raise ConfigError("autoencoder.weights='': autoencoder.kind='sd_vae' needs the directory written by "
                      "`python -m vin_jax.main convert --kind=sd_vae`")
  try:
    return convert.load_module(weights_dir, "sd_vae", dtype=jnp.dtype(dtype))
  except convert.ConversionError as e:
    raise ConfigError(f"autoencoder.weights={weights_dir!r}: {e}") from None
