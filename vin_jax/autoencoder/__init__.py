"""Autoencoders behind one interface: encode(pixels) -> latents, decode(latents) -> pixels."""
from vin_jax.autoencoder.patch import PatchAutoencoder, to_uint8

__all__ = ["PatchAutoencoder", "make_autoencoder", "to_uint8"]


def make_autoencoder(config):
  ae = config.autoencoder
  if ae.kind == "patch":
    return PatchAutoencoder(ae.spatial_factor, int(round(ae.temporal_factor)), ae.scale, ae.shift)
  raise ValueError(f"autoencoder.kind={ae.kind!r}: no pretrained VAE is available in this build; "
                   "use 'patch' (weight-free)")
