"""Autoencoders behind one interface, chosen by `autoencoder.kind`:

    ae = make_autoencoder(config)
    z = ae.encode(frames)   # uint8 [B, T, H, W, 3] (or floats in [-1, 1]) -> float32 [B, T/tf, H/s, W/s, c]
    x = ae.decode(z)        # -> float32 pixels [B, T, H, W, 3] in [-1, 1]-ish; `to_uint8` clips and rounds

Each exposes `spatial_factor` (s), `temporal_factor` (tf), `latent_channels` (c), `scale` and `shift`
(latents = (raw - shift) * scale). Kinds:
  patch    weight-free space-to-depth (vin_jax/autoencoder/patch.py)
  sd_vae   the Stable Diffusion VAE frame by frame (sd_vae.py, per_frame.py), weights from `convert --kind=sd_vae`
  wan_vae  the Wan 2.1 causal 3D VAE (wan_vae.py, causal_video.py), weights from `convert --kind=wan_vae`:
           1 + tf k pixel frames <-> 1 + k latent frames (`causal` is True; see vin_jax.config.latent_frames_of)
"""
from __future__ import annotations

import functools

from vin_jax.autoencoder.patch import PatchAutoencoder, to_uint8

__all__ = ["PatchAutoencoder", "make_autoencoder", "to_uint8"]

KINDS = ("patch", "sd_vae", "wan_vae")


def make_autoencoder(config, *, normalized: bool = True):
  """The autoencoder of `config.autoencoder`. `normalized=False` leaves out shift and scale (raw outputs, for
  measuring their statistics)."""
  ae = config.autoencoder
  scale, shift = (float(ae.scale), float(ae.shift)) if normalized else (1.0, 0.0)
  if ae.kind == "patch":
    return PatchAutoencoder(ae.spatial_factor, int(round(ae.temporal_factor)), scale, shift)
  if ae.kind in ("sd_vae", "wan_vae"):
    module = _load_module(str(ae.weights), ae.kind, ae.get("dtype", "float32"))
    checks = {"spatial_factor": module.spatial_factor, "latent_channels": module.latent_channels,
              "temporal_factor": getattr(module, "temporal_factor", 1)}
    for field, actual in checks.items():
      if float(ae[field]) != actual:
        from vin_jax.config import ConfigError
        raise ConfigError(f"autoencoder.{field}={ae[field]!r}, but the converted {ae.kind} at autoencoder.weights="
                          f"{ae.weights!r} has {actual}")
    if ae.kind == "wan_vae":
      from vin_jax.autoencoder.causal_video import CausalVideoAutoencoder
      return CausalVideoAutoencoder(module, scale=scale, shift=shift)
    from vin_jax.autoencoder.per_frame import PerFrameAutoencoder
    return PerFrameAutoencoder(module, scale=scale, shift=shift, frames_per_batch=int(ae.frames_per_batch))
  raise ValueError(f"autoencoder.kind={ae.kind!r} must be one of {KINDS}")


@functools.lru_cache(maxsize=2)
def _load_module(weights_dir: str, kind: str, dtype: str):
  import jax.numpy as jnp
  from vin_jax import convert
  from vin_jax.config import ConfigError
  if not weights_dir:
    raise ConfigError(f"autoencoder.weights='': autoencoder.kind={kind!r} needs the directory written by "
                      f"`python -m vin_jax.main convert --kind={kind}`")
  try:
    return convert.load_module(weights_dir, kind, dtype=jnp.dtype(dtype))
  except convert.ConversionError as e:
    raise ConfigError(f"autoencoder.weights={weights_dir!r}: {e}") from None
