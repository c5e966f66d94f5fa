"""The Flax port of diffusers' AutoencoderKLWan (Wan 2.1 VAE) against the PyTorch reference, through `vin_jax.convert`.

Videos longer than one temporal tile (1 + 4k frames, k >= 2) check the causal cache carried through the scan."""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from vin_jax import convert  # noqa: E402
from vin_jax.autoencoder import wan_vae  # noqa: E402
from tests import hf_models  # noqa: E402

WEIGHTS = "diffusion_pytorch_model.safetensors"
# The Wan 2.1 structure (three spatial and two temporal downsamples, f = 8, tf = 4), narrow.
SMALL = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True])
# One level down (f = 2, tf = 2) with a wider decoder: the temporal resamplers at the outermost level.
BARE = dict(base_dim=4, decoder_base_dim=8, z_dim=2, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[True])


def _torch_outputs(vae, x_NTHWC: np.ndarray, z_NTHWC: np.ndarray):
  ncthw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 4, 1, 2, 3)))
  nthwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 4, 1)
  with torch.no_grad():
    dist = vae.encode(ncthw(x_NTHWC)).latent_dist
    return nthwc(dist.mean), nthwc(dist.logvar), nthwc(vae.decode(ncthw(z_NTHWC)).sample)


def _inputs(config: dict, frames: int, size: int, seed: int = 1):
  """A video of `frames` frames and a latent video of as many latent frames as it encodes to."""
  rng = np.random.default_rng(seed)
  f, tf = 2 ** (len(config["dim_mult"]) - 1), 2 ** sum(config["temperal_downsample"])
  x = rng.uniform(-1, 1, (1, frames, size, size, 3)).astype(np.float32)
  z = rng.normal(size=(1, 1 + (frames - 1) // tf, size // f, size // f, config["z_dim"])).astype(np.float32)
  return x, z


def _ours(module, x, z):
  """(mean, logvar, decoded) of the module, each direction one jitted function of the weights."""
  graphdef, state = nnx.split(module)
  encode = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode_moments(x))
  decode = jax.jit(lambda s, z: nnx.merge(graphdef, s).decode(z))
  mean, logvar = encode(state, jnp.asarray(x))
  return np.asarray(mean), np.asarray(logvar), np.asarray(decode(state, jnp.asarray(z)))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  """(source dir, converted dir, inputs, torch outputs) of SMALL on 13 frames (the first, then 3 tiles of 4)."""
  root = tmp_path_factory.mktemp("small")
  vae = hf_models.wan_vae(SMALL)
  src = hf_models.save(vae, root / "src")
  convert.convert("wan_vae", src, root / "out")
  x, z = _inputs(SMALL, 13, 16)
  return src, root / "out", (x, z), _torch_outputs(vae, x, z)


def test_small_matches_diffusers_over_several_tiles(small):
  _, out, (x, z), ref = small
  module = convert.load_module(out, "wan_vae")
  assert (module.spatial_factor, module.temporal_factor, module.latent_channels) == (8, 4, 4)
  assert module.latents_mean == pytest.approx((0.0, 0.1, 0.2, 0.3)) and isinstance(module.latents_std, tuple)
  ours = _ours(module, x, z)
  assert ours[0].shape == (1, 4, 2, 2, 4) and ours[2].shape == (1, 13, 16, 16, 3)
  assert np.all(np.abs(ours[2]) <= 1.0)   # diffusers clips the decoded video
  hf_models.assert_vae_matches(ours, ref)


@pytest.mark.parametrize("frames", [1, 9])
def test_bare_matches_diffusers(tmp_path, frames):
  vae = hf_models.wan_vae(BARE, seed=2)
  convert.convert("wan_vae", hf_models.save(vae, tmp_path / "src"), tmp_path / "out")
  module = convert.load_module(tmp_path / "out", "wan_vae")
  assert (module.spatial_factor, module.temporal_factor, module.latent_channels) == (2, 2, 2)
  x, z = _inputs(BARE, frames, 8)
  hf_models.assert_vae_matches(_ours(module, x, z), _torch_outputs(vae, x, z))


def test_bfloat16_compute_stays_close(small):
  _, out, (x, z), ref = small
  bf16 = convert.load_module(out, "wan_vae", dtype=jnp.bfloat16)
  params = nnx.state(bf16, nnx.Param)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.to_pure_dict(params)))   # parameters stay fp32
  ours = _ours(bf16, x, z)
  for a, b in zip(ours, ref):
    assert a.dtype == np.float32 and np.all(np.isfinite(a))
    assert hf_models.max_diff(a, b) < 0.05 * max(1.0, float(np.max(np.abs(b)))), hf_models.max_diff(a, b)
  print("bf16 max abs differences:", [hf_models.max_diff(a, b) for a, b in zip(ours, ref)])


@pytest.mark.parametrize("shape, message", [((1, 12, 16, 16, 3), "12 frames"), ((1, 0, 16, 16, 3), "0 frames"),
                                            ((1, 5, 16, 12, 3), "multiples of 8")])
def test_bad_video_shape_raises(small, shape, message):
  module = convert.load_module(small[1], "wan_vae")
  with pytest.raises(ValueError, match=message):
    module.encode_moments(jnp.zeros(shape))


def test_hf_sources_cover_every_parameter():
  module_config = wan_vae.module_config_from_hf(dict(hf_models.wan_vae(SMALL).config))
  shapes = convert.abstract_shapes("wan_vae", module_config)
  sources = wan_vae.hf_sources(module_config)
  assert set(sources) == set(shapes)
  assert sources["encoder.down_blocks.1.resample.kernel"] == convert.Source("encoder.down_blocks.1.resample.1.weight",
                                                                            "conv2d")
  assert sources["encoder.down_blocks.5.time_conv.kernel"].layout == "conv3d"
  assert sources["decoder.mid_block.attentions.0.to_qkv.kernel"] == convert.Source(
      "decoder.mid_block.attentions.0.to_qkv.weight", "linear_from_conv1x1")
  assert sources["decoder.norm_out.gamma"] == convert.Source("decoder.norm_out.gamma", "reverse_axes")
  assert shapes["decoder.norm_out.gamma"] == (1, 1, 1, 8)
  assert shapes["encoder.mid_block.attentions.0.norm.gamma"] == (1, 1, 16)
  assert wan_vae.IGNORED_HF == ()


def test_module_config_from_hf():
  hf = dict(hf_models.wan_vae(SMALL).config)
  config = wan_vae.module_config_from_hf(hf)
  assert json.loads(json.dumps(config)) == config
  assert config["decoder_base_dim"] == 8 and config["temperal_downsample"] == [False, True, True]
  published = wan_vae.module_config_from_hf({"_class_name": "AutoencoderKLWan"})   # the defaults: Wan 2.1
  assert published["base_dim"] == 96 and published["z_dim"] == 16 and len(published["latents_std"]) == 16
  for field, value in [("is_residual", True), ("patch_size", 2), ("attn_scales", [0.5]),
                       ("temperal_downsample", [True, True]), ("temperal_downsample", [True, True, True]),
                       ("latents_mean", [0.0] * 16), ("z_dim", 0), ("dim_mult", [1, 0, 2, 2]),
                       ("_class_name", "AutoencoderKL")]:
    with pytest.raises(ValueError, match=field):
      wan_vae.module_config_from_hf({**hf, field: value})


def _wrong_shape(tensors):
  tensors["decoder.up_blocks.0.upsamplers.0.time_conv.weight"] = np.zeros((32, 16, 3, 3, 1), np.float32)


def _wrong_gamma(tensors):
  tensors["encoder.norm_out.gamma"] = np.ones((16,), np.float32)


def _deleted(tensors):
  del tensors["encoder.down_blocks.1.resample.1.bias"]


def _extra(tensors):
  tensors["encoder.extra.weight"] = np.zeros((3,), np.float32)


@pytest.mark.parametrize("edit, tensor", [(_wrong_shape, "decoder.up_blocks.0.upsamplers.0.time_conv.weight"),
                                          (_wrong_gamma, "encoder.norm_out.gamma"),
                                          (_deleted, "encoder.down_blocks.1.resample.1.bias"),
                                          (_extra, "encoder.extra.weight")])
def test_bad_source_raises_and_writes_nothing(small, tmp_path, edit, tensor):
  src = hf_models.edited_source(small[0], tmp_path, WEIGHTS, edit)
  with pytest.raises(convert.ConversionError, match=re.escape(f"tensor {tensor!r}")):
    convert.convert("wan_vae", src, tmp_path / "out")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["edited"]   # neither out nor a temporary directory


def test_make_autoencoder_wan_vae_gives_diffusers_latents_in_wans_normalised_space(small):
  """autoencoder.kind='wan_vae': encode = (diffusers' posterior mean - latents_mean) / latents_std, then the
  config's shift/scale; decode inverts both normalisations before diffusers' decoder; frame counts are causal."""
  from vin_jax import config as config_lib
  from vin_jax.autoencoder import make_autoencoder
  from vin_jax.config import ConfigError
  _, out, (x, _), (mean, _, _) = small
  config = config_lib.load_config_file("configs/paper.py", "smoke,wan")
  config.autoencoder.weights, config.autoencoder.latent_channels = str(out), 4
  config.autoencoder.shift, config.autoencoder.scale = 0.25, 0.5
  ae = make_autoencoder(config)
  assert (ae.causal, ae.temporal_factor, ae.spatial_factor) == (True, 4, 8)
  stats_mean, stats_std = np.arange(4) * 0.1, 1.0 + np.arange(4) * 0.1      # hf_models.wan_vae's statistics
  want = ((mean - stats_mean) / stats_std - 0.25) * 0.5
  z = np.asarray(ae.encode(x))
  assert z.shape == (1, config_lib.latent_frames_of(config, 13), 2, 2, 4) == (1, 4, 2, 2, 4)
  np.testing.assert_allclose(z, want, atol=1e-4)
  module = convert.load_module(out, "wan_vae")
  decoded = np.asarray(ae.decode(z))
  assert decoded.shape[1] == config_lib.pixel_frames_of(config, 4) == 13
  np.testing.assert_allclose(decoded, np.asarray(module.decode(jnp.asarray(mean))), atol=1e-4)

  config.autoencoder.temporal_factor = 2.0
  with pytest.raises(ConfigError, match="autoencoder.temporal_factor=2.0, but the converted wan_vae"):
    make_autoencoder(config)
