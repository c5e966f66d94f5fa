"""diffusers' `AutoencoderKL` (the Stable Diffusion VAE, e.g. stabilityai/sd-vae-ft-ema) in Flax NNX, channels-last.

The converter kind "sd_vae" (`vin_jax.convert`): `module_config_from_hf`, `build`, `hf_sources`, `IGNORED_HF`.
Flax names mirror the diffusers tensor names (encoder.down_blocks.0.resnets.0.conv1.kernel <-
encoder.down_blocks.0.resnets.0.conv1.weight), so `hf_sources` derives each source from its Flax name.

Parameters are fp32; computation runs in `dtype` (e.g. bfloat16) with GroupNorm statistics and the attention
softmax in fp32. Shape letters: N batch, H/W pixel rows/columns, h/w latent rows/columns, C channels,
L latent channels, f the spatial factor.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vin_jax.convert import Source
from vin_jax.model import layers

EPS = 1e-6                 # every GroupNorm of diffusers' VAE
LOGVAR_RANGE = (-30.0, 20.0)   # DiagonalGaussianDistribution's clip
IGNORED_HF = ()
# The mid-block attention's tensor names before diffusers 0.14 (`AttentionBlock`): Linear layers too.
_OLD_ATTENTION_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
# AutoencoderKL.__init__'s defaults, for keys that a config.json leaves out.
_HF_DEFAULTS = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"],
                "up_block_types": ["UpDecoderBlock2D"], "block_out_channels": [64], "layers_per_block": 1,
                "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32, "scaling_factor": 0.18215,
                "shift_factor": None, "use_quant_conv": True, "use_post_quant_conv": True,
                "mid_block_add_attention": True}


# ----------------------------------------------------------------------------------------------
# The config.

def module_config_from_hf(hf_config: dict) -> dict:
  """The module's settings (plain JSON) from diffusers' AutoencoderKL config.json; ValueError names what is
  unsupported."""
  class_name = hf_config.get("_class_name", "AutoencoderKL")
  if class_name != "AutoencoderKL":
    raise ValueError(f"_class_name={class_name!r}: only 'AutoencoderKL' is supported")
  get = lambda key: _HF_DEFAULTS[key] if hf_config.get(key) is None else hf_config[key]
  channels = [_positive_int("block_out_channels", c) for c in get("block_out_channels")]
  if not channels:
    raise ValueError("block_out_channels=[]: needs at least one block")
  config = {"in_channels": _positive_int("in_channels", get("in_channels")),
            "out_channels": _positive_int("out_channels", get("out_channels")),
            "block_out_channels": channels,
            "layers_per_block": _positive_int("layers_per_block", get("layers_per_block")),
            "latent_channels": _positive_int("latent_channels", get("latent_channels")),
            "norm_num_groups": _positive_int("norm_num_groups", get("norm_num_groups")),
            "act_fn": _one_of("act_fn", get("act_fn"), ("silu",)),
            "down_block_types": _block_types("down_block_types", get("down_block_types"), "DownEncoderBlock2D",
                                             len(channels)),
            "up_block_types": _block_types("up_block_types", get("up_block_types"), "UpDecoderBlock2D",
                                           len(channels)),
            "mid_block_add_attention": bool(get("mid_block_add_attention")),
            "use_quant_conv": bool(get("use_quant_conv")),
            "use_post_quant_conv": bool(get("use_post_quant_conv")),
            "scaling_factor": float(get("scaling_factor")),
            "shift_factor": float(hf_config.get("shift_factor") or 0.0)}
  bad = [c for c in channels if c % config["norm_num_groups"]]
  if bad:
    raise ValueError(f"norm_num_groups={config['norm_num_groups']} does not divide block_out_channels={channels}")
  return config


def _positive_int(field: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f"{field}={value!r} must be a positive integer")
  return value


def _one_of(field: str, value, allowed: tuple):
  if value not in allowed:
    raise ValueError(f"{field}={value!r} is not supported (only {allowed})")
  return value


def _block_types(field: str, types, allowed: str, num_blocks: int) -> list[str]:
  types = list(types)
  for t in types:
    _one_of(field, t, (allowed,))
  if len(types) != num_blocks:
    raise ValueError(f"{field}={types} has {len(types)} entries for {num_blocks} block_out_channels")
  return types


# ----------------------------------------------------------------------------------------------
# Building blocks (all NHWC).

class GroupNorm(nnx.Module):
  """torch.nn.GroupNorm over [N, H, W, C]: statistics and affine in fp32, output in the input's dtype."""

  def __init__(self, channels: int, groups: int, eps: float = EPS):
    self.groups, self.eps = groups, eps
    self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

  def __call__(self, x_NxHxWxC):
    n, h, w, c = x_NxHxWxC.shape
    x = x_NxHxWxC.astype(jnp.float32).reshape(n, h, w, self.groups, c // self.groups)
    mean = jnp.mean(x, axis=(1, 2, 4), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=(1, 2, 4), keepdims=True)
    y = ((x - mean) * jax.lax.rsqrt(var + self.eps)).reshape(n, h, w, c)
    return (y * self.scale[...] + self.bias[...]).astype(x_NxHxWxC.dtype)


def _conv(din: int, dout: int, kernel: int, rngs: nnx.Rngs, dtype, *, stride: int = 1, padding: int | None = None):
  """A k x k conv; `padding` per side, default k // 2 (a 3x3 keeps the size)."""
  pad = kernel // 2 if padding is None else padding
  return nnx.Conv(din, dout, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                  dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class ResnetBlock(nnx.Module):
  """diffusers' ResnetBlock2D without a time embedding: norm1-silu-conv1-norm2-silu-conv2 plus the input
  (through a 1x1 conv_shortcut when the width changes). Dropout is 0 at inference."""

  def __init__(self, din: int, dout: int, groups: int, *, rngs: nnx.Rngs, dtype):
    self.norm1 = GroupNorm(din, groups)
    self.conv1 = _conv(din, dout, 3, rngs, dtype)
    self.norm2 = GroupNorm(dout, groups)
    self.conv2 = _conv(dout, dout, 3, rngs, dtype)
    self.conv_shortcut = _conv(din, dout, 1, rngs, dtype) if din != dout else None

  def __call__(self, x_NxHxWxCin):
    h = self.conv1(jax.nn.silu(self.norm1(x_NxHxWxCin)))
    h = self.conv2(jax.nn.silu(self.norm2(h)))
    skip = x_NxHxWxCin if self.conv_shortcut is None else self.conv_shortcut(x_NxHxWxCin)
    return skip.astype(h.dtype) + h


class SelfAttention(nnx.Module):
  """The mid block's single-head attention over all H*W positions (head width C), with its own GroupNorm and
  a residual connection."""

  def __init__(self, channels: int, groups: int, *, rngs: nnx.Rngs, dtype):
    linear = lambda: nnx.Linear(channels, channels, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    self.group_norm = GroupNorm(channels, groups)
    self.to_q, self.to_k, self.to_v, self.to_out = linear(), linear(), linear(), linear()

  def __call__(self, x_NxHxWxC):
    n, h, w, c = x_NxHxWxC.shape
    tokens_NxLx1xC = self.group_norm(x_NxHxWxC).reshape(n, h * w, 1, c)
    out_NxLx1xC = layers.attention(self.to_q(tokens_NxLx1xC), self.to_k(tokens_NxLx1xC),
                                   self.to_v(tokens_NxLx1xC), kind="einsum")
    out = self.to_out(out_NxLx1xC).reshape(n, h, w, c)
    return x_NxHxWxC.astype(out.dtype) + out


class Downsample(nnx.Module):
  """Pads one row and column at the bottom/right, then a 3x3 stride-2 conv without padding: H -> H/2."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs, dtype):
    self.conv = _conv(channels, channels, 3, rngs, dtype, stride=2, padding=0)

  def __call__(self, x_NxHxWxC):
    return self.conv(jnp.pad(x_NxHxWxC, ((0, 0), (0, 1), (0, 1), (0, 0))))


class Upsample(nnx.Module):
  """Nearest-neighbour x2, then a 3x3 conv: H -> 2H."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs, dtype):
    self.conv = _conv(channels, channels, 3, rngs, dtype)

  def __call__(self, x_NxHxWxC):
    return self.conv(jnp.repeat(jnp.repeat(x_NxHxWxC, 2, axis=1), 2, axis=2))


class ResnetStack(nnx.Module):
  """DownEncoderBlock2D / UpDecoderBlock2D: resnets, then an optional `downsamplers.0` or `upsamplers.0`."""

  def __init__(self, din: int, dout: int, num_resnets: int, groups: int, *, resample=None, rngs: nnx.Rngs,
               dtype):
    self.resnets = nnx.List([ResnetBlock(din if i == 0 else dout, dout, groups, rngs=rngs, dtype=dtype)
                             for i in range(num_resnets)])
    self.downsamplers = nnx.List([Downsample(dout, rngs=rngs, dtype=dtype)] if resample == "down" else [])
    self.upsamplers = nnx.List([Upsample(dout, rngs=rngs, dtype=dtype)] if resample == "up" else [])

  def __call__(self, x):
    for layer in (*self.resnets, *self.downsamplers, *self.upsamplers):
      x = layer(x)
    return x


class MidBlock(nnx.Module):
  """UNetMidBlock2D: resnet, (attention), resnet, all at width C."""

  def __init__(self, channels: int, groups: int, add_attention: bool, *, rngs: nnx.Rngs, dtype):
    self.resnets = nnx.List([ResnetBlock(channels, channels, groups, rngs=rngs, dtype=dtype) for _ in range(2)])
    self.attentions = nnx.List([SelfAttention(channels, groups, rngs=rngs, dtype=dtype)] if add_attention else [])

  def __call__(self, x):
    x = self.resnets[0](x)
    for attention in self.attentions:
      x = attention(x)
    return self.resnets[1](x)


class Encoder(nnx.Module):
  """[N, H, W, in_channels] -> [N, H/f, W/f, 2 * latent_channels] (mean and logvar, before quant_conv)."""

  def __init__(self, cfg: dict, *, rngs: nnx.Rngs, dtype):
    widths, groups = cfg["block_out_channels"], cfg["norm_num_groups"]
    self.conv_in = _conv(cfg["in_channels"], widths[0], 3, rngs, dtype)
    self.down_blocks = nnx.List([
        ResnetStack(widths[max(i - 1, 0)], width, cfg["layers_per_block"], groups,
                    resample="down" if i < len(widths) - 1 else None, rngs=rngs, dtype=dtype)
        for i, width in enumerate(widths)])
    self.mid_block = MidBlock(widths[-1], groups, cfg["mid_block_add_attention"], rngs=rngs, dtype=dtype)
    self.conv_norm_out = GroupNorm(widths[-1], groups)
    self.conv_out = _conv(widths[-1], 2 * cfg["latent_channels"], 3, rngs, dtype)

  def __call__(self, x_NxHxWxCin):
    h = self.conv_in(x_NxHxWxCin)
    for block in self.down_blocks:
      h = block(h)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(self.mid_block(h))))


class Decoder(nnx.Module):
  """[N, h, w, latent_channels] -> [N, h*f, w*f, out_channels]; blocks run over reversed block_out_channels."""

  def __init__(self, cfg: dict, *, rngs: nnx.Rngs, dtype):
    widths, groups = cfg["block_out_channels"][::-1], cfg["norm_num_groups"]
    self.conv_in = _conv(cfg["latent_channels"], widths[0], 3, rngs, dtype)
    self.mid_block = MidBlock(widths[0], groups, cfg["mid_block_add_attention"], rngs=rngs, dtype=dtype)
    self.up_blocks = nnx.List([
        ResnetStack(widths[max(i - 1, 0)], width, cfg["layers_per_block"] + 1, groups,
                    resample="up" if i < len(widths) - 1 else None, rngs=rngs, dtype=dtype)
        for i, width in enumerate(widths)])
    self.conv_norm_out = GroupNorm(widths[-1], groups)
    self.conv_out = _conv(widths[-1], cfg["out_channels"], 3, rngs, dtype)

  def __call__(self, z_NxhxwxL):
    h = self.mid_block(self.conv_in(z_NxhxwxL))
    for block in self.up_blocks:
      h = block(h)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(h)))


class AutoencoderKL(nnx.Module):
  """The VAE. Latents for a diffusion model are (mean - shift_factor) * scaling_factor (diffusers' convention)."""

  def __init__(self, cfg: dict, *, rngs: nnx.Rngs, dtype=jnp.float32):
    latent = cfg["latent_channels"]
    self.dtype = dtype
    self.spatial_factor = 2 ** (len(cfg["block_out_channels"]) - 1)
    self.latent_channels = latent
    self.scaling_factor = float(cfg["scaling_factor"])
    self.shift_factor = float(cfg["shift_factor"])
    self.encoder = Encoder(cfg, rngs=rngs, dtype=dtype)
    self.decoder = Decoder(cfg, rngs=rngs, dtype=dtype)
    self.quant_conv = _conv(2 * latent, 2 * latent, 1, rngs, dtype) if cfg["use_quant_conv"] else None
    self.post_quant_conv = _conv(latent, latent, 1, rngs, dtype) if cfg["use_post_quant_conv"] else None

  def encode_moments(self, x_NxHxWxCin):
    """Pixels in [-1, 1] -> (mean, logvar), each float32 [N, H/f, W/f, L]; logvar clipped to [-30, 20]."""
    moments = self.encoder(x_NxHxWxCin.astype(self.dtype))
    if self.quant_conv is not None:
      moments = self.quant_conv(moments)
    mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def decode(self, z_NxhxwxL):
    """Latents (unscaled: a mean of `encode_moments`) -> float32 pixels [N, h*f, w*f, out_channels]."""
    z = z_NxhxwxL.astype(self.dtype)
    if self.post_quant_conv is not None:
      z = self.post_quant_conv(z)
    return self.decoder(z).astype(jnp.float32)


def build(module_config: dict, rngs: nnx.Rngs, dtype=jnp.float32) -> AutoencoderKL:
  return AutoencoderKL(module_config, rngs=rngs, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Where each parameter comes from.

def hf_sources(module_config: dict) -> dict[str, Source]:
  """{dotted Flax name: Source} for every parameter: the diffusers name is the Flax name with kernel/scale ->
  weight and to_out -> to_out.0; a 4-D kernel is a conv, a 2-D one a Linear."""
  from vin_jax import convert
  return {name: _source(name, len(shape)) for name, shape in convert.abstract_shapes("sd_vae", module_config).items()}


def _source(flax_name: str, ndim: int) -> Source:
  *path, leaf = flax_name.split(".")
  if path[-1] == "to_out":
    path.append("0")
  hf_leaf, layout = {"kernel": ("weight", "conv2d" if ndim == 4 else "linear"), "scale": ("weight", "same"),
                     "bias": ("bias", "same")}[leaf]
  module_path = ".".join(path)
  aliases = tuple(f"{module_path[:-len(new)]}{old}.{hf_leaf}" for new, old in _OLD_ATTENTION_NAMES.items()
                  if module_path.endswith(f".attentions.0.{new}"))
  return Source(f"{module_path}.{hf_leaf}", layout, aliases)
