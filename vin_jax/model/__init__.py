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
    # Linear layers that compute in a narrower dtype than their fp32 parameters (model.dtype = bfloat16).
    self._cast_paths = {tuple(path): node.dtype for path, node in nnx.iter_graph(abstract)
                        if isinstance(node, nnx.Linear) and node.dtype is not None
                        and jax.numpy.dtype(node.dtype).itemsize < 4}

  def init(self, rng: jax.Array) -> dict:
    """Fresh parameters (a nested dict of fp32 arrays)."""
    return nnx.to_pure_dict(nnx.state(VideoDenoiser(self.config, rngs=nnx.Rngs(params=rng))))

  def abstract_params(self) -> dict:
    return jax.eval_shape(self.init, jax.random.key(0))

  def compute_params(self, params: dict) -> dict:
    """`params` with the kernels and biases of the bf16-computing linear layers cast to bf16: the same outputs
    and gradients, bit for bit (nnx.Linear casts them to its dtype before the matmul anyway), at half the
    bytes. Sampling stores its weights so; the train step casts its fp32 master weights so before use, so
    FSDP gathers bf16 weights and the gradients they return are bf16 until the cast back. Norm scales,
    embeddings and fp32 layers are kept as they are."""
    def cast(tree, path, dtype):
      node = tree
      for key in path[:-1]:
        node = node[key]
      node[path[-1]] = {k: (v.astype(dtype) if k in ("kernel", "bias") else v) for k, v in node[path[-1]].items()}

    out = jax.tree.map(lambda x: x, params)   # a fresh nested dict, leaves shared
    for path, dtype in self._cast_paths.items():
      cast(out, path, dtype)
    return out

  def bind(self, params: dict) -> VideoDenoiser:
    return nnx.merge(self.graphdef, params)
