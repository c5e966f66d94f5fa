"""Model definition: params are pure dicts of arrays; `ModelDef.bind(params)` gives a callable module.

Splitting here keeps every jitted function pure: (params, inputs) -> outputs.
"""
from __future__ import annotations

import jax
from flax import nnx

from vin_jax.model.denoiser import VideoDenoiser


class ModelDef:

  def __init__(self, config):
    self.config = config
    abstract = nnx.eval_shape(lambda: VideoDenoiser(config, rngs=nnx.Rngs(0)))
    self.graphdef, _ = nnx.split(abstract)

  def init(self, rng: jax.Array) -> dict:
    """Fresh parameters (a nested dict of fp32 arrays)."""
    return nnx.to_pure_dict(nnx.state(VideoDenoiser(self.config, rngs=nnx.Rngs(params=rng))))

  def abstract_params(self) -> dict:
    return jax.eval_shape(self.init, jax.random.key(0))

  def bind(self, params: dict) -> VideoDenoiser:
    return nnx.merge(self.graphdef, params)
