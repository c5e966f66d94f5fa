"""diffusers' `AutoencoderKLWan` (the Wan 2.1 causal 3D video VAE) in Flax NNX, channels-last.

    python -m vin_jax.main convert --kind=wan_vae --src=DIR_OF_save_pretrained --out=OUT
    vae = convert.load_module(OUT, "wan_vae")
    mean, logvar = vae.encode_moments(video_NxTxHxWx3)   # T = 1 + 4k -> [N, 1 + k, H/8, W/8, z_dim]
    video = vae.decode(mean)                              # -> [N, 1 + 4k, H, W, 3], clipped to [-1, 1]

The converter kind "wan_vae" (`vin_jax.convert`): `module_config_from_hf`, `build`, `hf_sources`, `IGNORED_HF`.
Flax names mirror the diffusers tensor names (encoder.down_blocks.0.conv1.kernel <- encoder.down_blocks.0.conv1.weight,
...resample.kernel <- ...resample.1.weight, ...norm1.gamma <- ...norm1.gamma).

Causality. Every 3x3x3 convolution is causal in time: it sees its two previous input frames (zeros before the
video starts). Like diffusers, a video is encoded in temporal tiles: its first frame, then 4 frames at a time; a
latent video is decoded one latent frame at a time. Each causal layer's last input frames (the "cache") go from one
tile to the next as explicit arrays: every layer's `__call__(x, cache) -> (y, new_cache)`, with cache None for the
first tile; the tiles after the first are a `lax.scan` whose carry is that cache pytree, so memory does not grow
with the video's length. The first tile differs in the temporal resamplers: downsample3d keeps its one frame
without the time conv, and upsample3d skips its time conv (one output frame instead of two) -- so that a video of
1 + 4k frames has 1 + k latent frames and back.

Parameters are fp32; computation runs in `dtype` (e.g. bfloat16) with the RMS norms and the attention softmax in
fp32. Shape letters: N batch, T/H/W pixel frames/rows/columns, t/h/w latent ones, C channels, Z z_dim.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from vin_jax.convert import Source
from vin_jax.model import layers

NORM_EPS = 1e-12               # torch.nn.functional.normalize's eps
LOGVAR_RANGE = (-30.0, 20.0)   # DiagonalGaussianDistribution's clip
CACHE_FRAMES = 2               # diffusers' CACHE_T: the history of a causal 3x3x3 conv
CHUNK_FRAMES = 4               # frames per encoder tile after the first (diffusers' `_encode`)
IGNORED_HF = ()
# AutoencoderKLWan.__init__'s defaults, for keys that a config.json leaves out (latents_mean/std: the
# published 16-channel statistics, so a config that leaves them out must have z_dim 16).
_WAN21_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
               -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
_WAN21_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
              1.6382, 1.1253, 2.8251, 1.9160]
_HF_DEFAULTS = {"base_dim": 96, "decoder_base_dim": None, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                "attn_scales": [], "temperal_downsample": [False, True, True], "latents_mean": _WAN21_MEAN,
                "latents_std": _WAN21_STD, "is_residual": False, "in_channels": 3, "out_channels": 3,
                "patch_size": None}
# Fields of the config that do not change the computation: dropout (0 at inference) and the compression ratios
# that diffusers' pipelines read (derived here from dim_mult and temperal_downsample instead).
_UNUSED_HF = ("dropout", "scale_factor_temporal", "scale_factor_spatial")


# ----------------------------------------------------------------------------------------------
# The config.

def module_config_from_hf(hf_config: dict) -> dict:
  """The module's settings (plain JSON) from diffusers' AutoencoderKLWan config.json; ValueError names what is
  unsupported (Wan 2.2's is_residual / patch_size, attention blocks, more than two temporal downsamples)."""
  class_name = hf_config.get("_class_name", "AutoencoderKLWan")
  if class_name != "AutoencoderKLWan":
    raise ValueError(f"_class_name={class_name!r}: only 'AutoencoderKLWan' is supported")
  get = lambda key: hf_config[key] if key in hf_config else _HF_DEFAULTS[key]
  if get("is_residual"):
    raise ValueError("is_residual=True (the Wan 2.2 VAE) is not supported: only the Wan 2.1 VAE")
  if get("patch_size") is not None:
    raise ValueError(f"patch_size={get('patch_size')!r} (the Wan 2.2 VAE) is not supported: only None")
  if list(get("attn_scales")):
    raise ValueError(f"attn_scales={get('attn_scales')!r} is not supported (only []: diffusers' encoder cannot "
                     "run its attention blocks with the causal cache, and its decoder has none)")
  dim_mult = [_positive_int("dim_mult", m) for m in get("dim_mult")]
  if not dim_mult:
    raise ValueError("dim_mult=[]: needs at least one block")
  temporal = list(get("temperal_downsample"))
  if len(temporal) != len(dim_mult) - 1 or any(not isinstance(d, bool) for d in temporal):
    raise ValueError(f"temperal_downsample={temporal!r} must be {len(dim_mult) - 1} booleans (one per "
                     f"downsample of dim_mult={dim_mult})")
  if 2 ** sum(temporal) > CHUNK_FRAMES:
    raise ValueError(f"temperal_downsample={temporal!r}: at most {int(math.log2(CHUNK_FRAMES))} temporal "
                     f"downsamples fit the encoder's tiles of {CHUNK_FRAMES} frames")
  base_dim = _positive_int("base_dim", get("base_dim"))
  z_dim = _positive_int("z_dim", get("z_dim"))
  config = {"base_dim": base_dim,
            "decoder_base_dim": _positive_int("decoder_base_dim", get("decoder_base_dim") or base_dim),
            "z_dim": z_dim, "dim_mult": dim_mult,
            "num_res_blocks": _positive_int("num_res_blocks", get("num_res_blocks")),
            "temperal_downsample": temporal,
            "in_channels": _positive_int("in_channels", get("in_channels")),
            "out_channels": _positive_int("out_channels", get("out_channels")),
            "latents_mean": _floats("latents_mean", get("latents_mean"), z_dim),
            "latents_std": _floats("latents_std", get("latents_std"), z_dim)}
  if any(config["decoder_base_dim"] * m % 2 for m in dim_mult[1:]):
    raise ValueError(f"decoder_base_dim={config['decoder_base_dim']} with dim_mult={dim_mult}: an upsampler "
                     "would halve an odd width")
  return config


def _positive_int(field: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f"{field}={value!r} must be a positive integer")
  return value


def _floats(field: str, values, length: int) -> list[float]:
  values = [float(v) for v in values]
  if len(values) != length:
    raise ValueError(f"{field} has {len(values)} values for z_dim={length}")
  return values


# ----------------------------------------------------------------------------------------------
# Building blocks (all [N, T, H, W, C]). Each causal layer: __call__(x, cache) -> (y, new_cache), cache None for
# the first tile; () for a layer without one.

def _parts(cache, n: int) -> tuple:
  """The children's caches of a container's cache (all None for the first tile)."""
  return (None,) * n if cache is None else cache


class RMSNorm(nnx.Module):
  """WanRMS_norm: x / ||x|| over channels * sqrt(C) * gamma (no bias), in fp32, output in the input's dtype.
  gamma has the broadcast shape of diffusers' [C, 1, 1, 1] ([C, 1, 1] for `images`), channels last."""

  def __init__(self, channels: int, *, images: bool = False):
    self.gamma = nnx.Param(jnp.ones((1,) * (2 if images else 3) + (channels,), jnp.float32))

  def __call__(self, x_xC):
    x = x_xC.astype(jnp.float32)
    sum_sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    y = x * jax.lax.rsqrt(jnp.maximum(sum_sq, NORM_EPS ** 2)) * math.sqrt(x.shape[-1]) * self.gamma[...]
    return y.astype(x_xC.dtype)


class CausalConv3d(nnx.Conv):
  """WanCausalConv3d: spatial padding k // 2, and in time the `kt - 1` previous input frames -- the cache, zeros
  before the video -- in front of x (kt = 1: no cache)."""

  def __init__(self, din: int, dout: int, kernel: tuple[int, int, int], *, rngs: nnx.Rngs, dtype):
    kt, kh, kw = kernel
    super().__init__(din, dout, kernel, padding=((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)), dtype=dtype,
                     param_dtype=jnp.float32, rngs=rngs)
    self.history = kt - 1

  def __call__(self, x_NxTxHxWxC, cache=None):
    if not self.history:
      return super().__call__(x_NxTxHxWxC), ()
    x = _with_history(cache, x_NxTxHxWxC, self.history)
    return super().__call__(x), x[:, -self.history:]


def _with_history(cache_NxKxHxWxC, x_NxTxHxWxC, frames: int):
  """The cache (or `frames` zero frames for the first tile) and x, along time."""
  if cache_NxKxHxWxC is None:
    cache_NxKxHxWxC = jnp.zeros((x_NxTxHxWxC.shape[0], frames, *x_NxTxHxWxC.shape[2:]), x_NxTxHxWxC.dtype)
  return jnp.concatenate([cache_NxKxHxWxC.astype(x_NxTxHxWxC.dtype), x_NxTxHxWxC], axis=1)


def _per_frame(fn, x_NxTxHxWxC):
  n, t = x_NxTxHxWxC.shape[:2]
  y = fn(x_NxTxHxWxC.reshape(n * t, *x_NxTxHxWxC.shape[2:]))
  return y.reshape(n, t, *y.shape[1:])


class ResidualBlock(nnx.Module):
  """WanResidualBlock: norm1-silu-conv1-norm2-silu-conv2 (causal 3x3x3) plus the input, through a 1x1x1
  conv_shortcut when the width changes. Dropout is 0 at inference."""

  def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs, dtype):
    self.norm1 = RMSNorm(din)
    self.conv1 = CausalConv3d(din, dout, (3, 3, 3), rngs=rngs, dtype=dtype)
    self.norm2 = RMSNorm(dout)
    self.conv2 = CausalConv3d(dout, dout, (3, 3, 3), rngs=rngs, dtype=dtype)
    self.conv_shortcut = CausalConv3d(din, dout, (1, 1, 1), rngs=rngs, dtype=dtype) if din != dout else None

  def __call__(self, x, cache=None):
    cache1, cache2 = _parts(cache, 2)
    h, cache1 = self.conv1(jax.nn.silu(self.norm1(x)), cache1)
    h, cache2 = self.conv2(jax.nn.silu(self.norm2(h)), cache2)
    skip = x if self.conv_shortcut is None else self.conv_shortcut(x)[0]
    return skip.astype(h.dtype) + h, (cache1, cache2)


class AttentionBlock(nnx.Module):
  """WanAttentionBlock: single-head self-attention over each frame's H*W positions (head width C), with its own
  RMS norm and a residual connection. No cache."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs, dtype):
    self.norm = RMSNorm(channels, images=True)
    self.to_qkv = nnx.Linear(channels, 3 * channels, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    self.proj = nnx.Linear(channels, channels, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, x_NxTxHxWxC, cache=None):
    n, t, h, w, c = x_NxTxHxWxC.shape
    qkv = self.to_qkv(self.norm(x_NxTxHxWxC)).reshape(n * t, h * w, 1, 3 * c)
    q, k, v = jnp.split(qkv, 3, axis=-1)
    out = self.proj(layers.attention(q, k, v, kind="einsum").reshape(n, t, h, w, c))
    return x_NxTxHxWxC.astype(out.dtype) + out, ()


class Resample(nnx.Module):
  """WanResample. downsample2d/3d: a 3x3 stride-2 conv after one zero row and column at the bottom/right (H -> H/2),
  then for 3d a time conv (kernel 3, stride 2) over the previous tile's last frame and this tile's (T -> T/2; the
  first tile's single frame passes). upsample2d/3d: for 3d first a causal time conv to 2C channels that become two
  frames each (T -> 2T; skipped for the first tile, whose input the later tiles' time conv does not see: it starts
  from zeros at the second tile), then nearest x2 and a 3x3 conv to C/2 channels."""

  def __init__(self, channels: int, mode: str, *, rngs: nnx.Rngs, dtype):
    self.mode = mode
    conv = lambda din, dout, kernel, **kw: nnx.Conv(din, dout, kernel, dtype=dtype, param_dtype=jnp.float32,
                                                    rngs=rngs, **kw)
    if mode.startswith("downsample"):
      self.resample = conv(channels, channels, (3, 3), strides=(2, 2), padding=((0, 1), (0, 1)))
    else:
      self.resample = conv(channels, channels // 2, (3, 3), padding=((1, 1), (1, 1)))
    self.time_conv = {
        "downsample3d": lambda: conv(channels, channels, (3, 1, 1), strides=(2, 1, 1), padding="VALID"),
        "upsample3d": lambda: CausalConv3d(channels, 2 * channels, (3, 1, 1), rngs=rngs, dtype=dtype),
    }.get(mode, lambda: None)()

  def __call__(self, x, cache=None):
    new_cache = ()
    if self.mode == "upsample3d":
      if cache is None:   # diffusers' "Rep": the second tile's time conv sees zeros, not this tile's frame
        new_cache = jnp.zeros((x.shape[0], CACHE_FRAMES, *x.shape[2:]), x.dtype)
      else:
        y, new_cache = self.time_conv(x, cache)                          # [N, T, H, W, 2C]
        n, t, h, w, c2 = y.shape
        y = y.reshape(n, t, h, w, 2, c2 // 2).transpose(0, 1, 4, 2, 3, 5)
        x = y.reshape(n, 2 * t, h, w, c2 // 2)
    if self.mode.startswith("upsample"):
      x = _per_frame(lambda f: self.resample(jnp.repeat(jnp.repeat(f, 2, axis=1), 2, axis=2)), x)
    else:
      x = _per_frame(self.resample, x)
    if self.mode == "downsample3d":
      new_cache = x[:, -1:]
      if cache is not None:
        x = self.time_conv(jnp.concatenate([cache.astype(x.dtype), x], axis=1))
    return x, new_cache


class MidBlock(nnx.Module):
  """WanMidBlock: resnet, attention, resnet, all at width C."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs, dtype):
    self.resnets = nnx.List([ResidualBlock(channels, channels, rngs=rngs, dtype=dtype) for _ in range(2)])
    self.attentions = nnx.List([AttentionBlock(channels, rngs=rngs, dtype=dtype)])

  def __call__(self, x, cache=None):
    return _run((self.resnets[0], self.attentions[0], self.resnets[1]), x, cache)


def _run(layers_, x, cache):
  """Layers in sequence, each with its cache; returns (x, their new caches)."""
  caches = []
  for layer, c in zip(layers_, _parts(cache, len(layers_))):
    x, c = layer(x, c)
    caches.append(c)
  return x, tuple(caches)


class UpBlock(nnx.Module):
  """WanUpBlock: num_res_blocks + 1 resnets, then an optional `upsamplers.0`."""

  def __init__(self, din: int, dout: int, num_resnets: int, mode: str | None, *, rngs: nnx.Rngs, dtype):
    self.resnets = nnx.List([ResidualBlock(din if i == 0 else dout, dout, rngs=rngs, dtype=dtype)
                             for i in range(num_resnets)])
    self.upsamplers = nnx.List([Resample(dout, mode, rngs=rngs, dtype=dtype)] if mode else [])

  def __call__(self, x, cache=None):
    return _run((*self.resnets, *self.upsamplers), x, cache)


class Encoder(nnx.Module):
  """WanEncoder3d: [N, T, H, W, in_channels] -> [N, T / tf, H/f, W/f, 2 Z] (mean and logvar, before quant_conv).
  `down_blocks` is diffusers' flat list: per level num_res_blocks resnets, then a Resample but at the last."""

  def __init__(self, cfg: dict, *, rngs: nnx.Rngs, dtype):
    dims = [cfg["base_dim"] * m for m in [1] + cfg["dim_mult"]]
    self.conv_in = CausalConv3d(cfg["in_channels"], dims[0], (3, 3, 3), rngs=rngs, dtype=dtype)
    blocks = []
    for i, (din, dout) in enumerate(zip(dims[:-1], dims[1:])):
      for j in range(cfg["num_res_blocks"]):
        blocks.append(ResidualBlock(din if j == 0 else dout, dout, rngs=rngs, dtype=dtype))
      if i < len(cfg["dim_mult"]) - 1:
        mode = "downsample3d" if cfg["temperal_downsample"][i] else "downsample2d"
        blocks.append(Resample(dout, mode, rngs=rngs, dtype=dtype))
    self.down_blocks = nnx.List(blocks)
    self.mid_block = MidBlock(dims[-1], rngs=rngs, dtype=dtype)
    self.norm_out = RMSNorm(dims[-1])
    self.conv_out = CausalConv3d(dims[-1], 2 * cfg["z_dim"], (3, 3, 3), rngs=rngs, dtype=dtype)

  def __call__(self, x, cache=None):
    in_cache, down_cache, mid_cache, out_cache = _parts(cache, 4)
    h, in_cache = self.conv_in(x, in_cache)
    h, down_cache = _run(tuple(self.down_blocks), h, down_cache)
    h, mid_cache = self.mid_block(h, mid_cache)
    h, out_cache = self.conv_out(jax.nn.silu(self.norm_out(h)), out_cache)
    return h, (in_cache, down_cache, mid_cache, out_cache)


class Decoder(nnx.Module):
  """WanDecoder3d: [N, t, h, w, Z] -> [N, (t - 1) tf + 1 for the first tile else t tf, h f, w f, out_channels].
  Widths decoder_base_dim * [dim_mult[-1], *reversed(dim_mult)]; an upsampler halves its block's width."""

  def __init__(self, cfg: dict, *, rngs: nnx.Rngs, dtype):
    mult = cfg["dim_mult"]
    dims = [cfg["decoder_base_dim"] * m for m in [mult[-1]] + mult[::-1]]
    temporal_up = cfg["temperal_downsample"][::-1]
    self.conv_in = CausalConv3d(cfg["z_dim"], dims[0], (3, 3, 3), rngs=rngs, dtype=dtype)
    self.mid_block = MidBlock(dims[0], rngs=rngs, dtype=dtype)
    blocks = []
    for i, (din, dout) in enumerate(zip(dims[:-1], dims[1:])):
      mode = None
      if i < len(mult) - 1:
        mode = "upsample3d" if temporal_up[i] else "upsample2d"
      blocks.append(UpBlock(din // 2 if i > 0 else din, dout, cfg["num_res_blocks"] + 1, mode, rngs=rngs,
                            dtype=dtype))
    self.up_blocks = nnx.List(blocks)
    self.norm_out = RMSNorm(dims[-1])
    self.conv_out = CausalConv3d(dims[-1], cfg["out_channels"], (3, 3, 3), rngs=rngs, dtype=dtype)

  def __call__(self, z, cache=None):
    in_cache, mid_cache, up_cache, out_cache = _parts(cache, 4)
    h, in_cache = self.conv_in(z, in_cache)
    h, mid_cache = self.mid_block(h, mid_cache)
    h, up_cache = _run(tuple(self.up_blocks), h, up_cache)
    h, out_cache = self.conv_out(jax.nn.silu(self.norm_out(h)), out_cache)
    return h, (in_cache, mid_cache, up_cache, out_cache)


class WanVAE(nnx.Module):
  """The VAE, channels-last. Latents for a Wan diffusion model are (mean - latents_mean) / latents_std per channel
  (diffusers' Wan pipelines)."""

  def __init__(self, cfg: dict, *, rngs: nnx.Rngs, dtype=jnp.float32):
    z_dim = cfg["z_dim"]
    self.dtype = dtype
    self.spatial_factor = 2 ** (len(cfg["dim_mult"]) - 1)
    self.temporal_factor = 2 ** sum(cfg["temperal_downsample"])
    self.latent_channels = z_dim
    self.latents_mean = tuple(float(m) for m in cfg["latents_mean"])
    self.latents_std = tuple(float(s) for s in cfg["latents_std"])
    self.encoder = Encoder(cfg, rngs=rngs, dtype=dtype)
    self.quant_conv = CausalConv3d(2 * z_dim, 2 * z_dim, (1, 1, 1), rngs=rngs, dtype=dtype)
    self.post_quant_conv = CausalConv3d(z_dim, z_dim, (1, 1, 1), rngs=rngs, dtype=dtype)
    self.decoder = Decoder(cfg, rngs=rngs, dtype=dtype)

  def encode_moments(self, video_NxTxHxWxC):
    """Pixels in [-1, 1], T = 1 + 4k -> (mean, logvar), each float32 [N, 1 + 4k / tf, H/f, W/f, Z] (1 + k for
    the standard tf = 4); logvar clipped to [-30, 20]. The first frame, then a scan over tiles of 4 frames."""
    n, t, height, width, _ = video_NxTxHxWxC.shape
    if t < 1 or (t - 1) % CHUNK_FRAMES:
      raise ValueError(f"a video of {t} frames: the Wan VAE encodes 1 + {CHUNK_FRAMES}k frames (1, 5, 9, ...)")
    f = self.spatial_factor
    if height % f or width % f:
      raise ValueError(f"a video of {height}x{width} pixels: height and width must be multiples of {f}")
    x = video_NxTxHxWxC.astype(self.dtype)
    moments, cache = self.encoder(x[:, :1])
    tiles = (t - 1) // CHUNK_FRAMES
    if tiles:
      def one_tile(cache, i):
        out, cache = self.encoder(jax.lax.dynamic_slice_in_dim(x, 1 + CHUNK_FRAMES * i, CHUNK_FRAMES, axis=1), cache)
        return cache, out

      _, rest_KxNxtxhxwx2Z = jax.lax.scan(one_tile, cache, jnp.arange(tiles))
      rest = jnp.moveaxis(rest_KxNxtxhxwx2Z, 0, 1)
      moments = jnp.concatenate([moments, rest.reshape(n, -1, *rest.shape[3:])], axis=1)
    mean, logvar = jnp.split(self.quant_conv(moments)[0].astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def decode(self, z_NxtxhxwxZ):
    """Latents (unnormalised: a mean of `encode_moments`) [N, t, h, w, Z] -> float32 pixels
    [N, 1 + (t - 1) tf, h f, w f, out_channels], clipped to [-1, 1] (as diffusers' decode). One latent frame at a
    time: the first, then a scan that writes each step's tf frames into the output."""
    n, t = z_NxtxhxwxZ.shape[:2]
    z = self.post_quant_conv(z_NxtxhxwxZ.astype(self.dtype))[0]
    first, cache = self.decoder(z[:, :1])
    frames = lambda y: jnp.clip(y.astype(jnp.float32), -1.0, 1.0)
    if t == 1:
      return frames(first)
    tf = self.temporal_factor
    out = jnp.zeros((n, 1 + (t - 1) * tf, *first.shape[2:]), jnp.float32)
    out = jax.lax.dynamic_update_slice_in_dim(out, frames(first), 0, axis=1)

    def one_step(carry, i):
      cache, out = carry
      y, cache = self.decoder(jax.lax.dynamic_slice_in_dim(z, i, 1, axis=1), cache)
      return (cache, jax.lax.dynamic_update_slice_in_dim(out, frames(y), 1 + (i - 1) * tf, axis=1)), None

    (_, out), _ = jax.lax.scan(one_step, (cache, out), jnp.arange(1, t))
    return out


def build(module_config: dict, rngs: nnx.Rngs, dtype=jnp.float32) -> WanVAE:
  return WanVAE(module_config, rngs=rngs, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Where each parameter comes from.

def hf_sources(module_config: dict) -> dict[str, Source]:
  """{dotted Flax name: Source} for every parameter: the diffusers name is the Flax name with kernel -> weight and
  resample -> resample.1 (diffusers' Sequential); a 5-D kernel is a Conv3d, a 4-D one a Conv2d, a 2-D one a 1x1
  Conv2d (the attention's to_qkv / proj); gamma [(1,) 1, 1, C] <- [C, 1, 1(, 1)]."""
  from vin_jax import convert
  return {name: _source(name, len(shape)) for name, shape in convert.abstract_shapes("wan_vae", module_config).items()}


def _source(flax_name: str, ndim: int) -> Source:
  *path, leaf = flax_name.split(".")
  if path[-1] == "resample":
    path.append("1")
  kernel_layout = {5: "conv3d", 4: "conv2d", 2: "linear_from_conv1x1"}
  hf_leaf, layout = {"kernel": ("weight", kernel_layout.get(ndim)), "bias": ("bias", "same"),
                     "gamma": ("gamma", "reverse_axes")}[leaf]
  return Source(f"{'.'.join(path)}.{hf_leaf}", layout)
