"""The Flax port of diffusers' AutoencoderKL against the PyTorch reference, through `vin_jax.convert`."""
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
from vin_jax.autoencoder import sd_vae  # noqa: E402
from tests import hf_models  # noqa: E402

WEIGHTS = "diffusion_pytorch_model.safetensors"
SMALL = dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, latent_channels=4)
# Three blocks with two resnets each; no attention and no quant convs; unequal in/out channels.
DEEP = dict(block_out_channels=(16, 32, 32), layers_per_block=2, norm_num_groups=8, latent_channels=3)
BARE = dict(block_out_channels=(16,), layers_per_block=1, norm_num_groups=4, latent_channels=2, in_channels=2,
            out_channels=5, mid_block_add_attention=False, use_quant_conv=False, use_post_quant_conv=False)
CONFIGS = {"small": SMALL, "deep": DEEP, "bare": BARE}
SIZE = 16   # image side for DEEP / BARE (SMALL uses 32)


def _torch_outputs(vae, x_NHWC: np.ndarray, z_NHWC: np.ndarray):
  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
  nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1)
  with torch.no_grad():
    dist = vae.encode(nchw(x_NHWC)).latent_dist
    return nhwc(dist.mean), nhwc(dist.logvar), nhwc(vae.decode(nchw(z_NHWC)).sample)


def _inputs(config: dict, size: int, seed: int = 1):
  rng = np.random.default_rng(seed)
  f = 2 ** (len(config["block_out_channels"]) - 1)
  x = rng.uniform(-1, 1, (2, size, size, config.get("in_channels", 3))).astype(np.float32)
  z = rng.normal(size=(2, size // f, size // f, config["latent_channels"])).astype(np.float32)
  return x, z


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  """(source dir, converted dir, inputs, torch outputs) of the SMALL config, converted once."""
  root = tmp_path_factory.mktemp("small")
  vae = hf_models.sd_vae(SMALL)
  src = hf_models.save(vae, root / "src")
  convert.convert("sd_vae", src, root / "out")
  x, z = _inputs(SMALL, 32)
  return src, root / "out", (x, z), _torch_outputs(vae, x, z)


def _ours(module, x, z):
  mean, logvar = module.encode_moments(jnp.asarray(x))
  return np.asarray(mean), np.asarray(logvar), np.asarray(module.decode(jnp.asarray(z)))


def test_small_matches_diffusers(small):
  _, out, (x, z), ref = small
  module = convert.load_module(out, "sd_vae")
  assert module.spatial_factor == 2 and module.scaling_factor == pytest.approx(0.18215)
  assert module.shift_factor == 0.0
  hf_models.assert_vae_matches(_ours(module, x, z), ref)


@pytest.mark.parametrize("name", ["deep", "bare"])
def test_other_configs_match_diffusers(tmp_path, name):
  config = CONFIGS[name]
  vae = hf_models.sd_vae(config, seed=2)
  convert.convert("sd_vae", hf_models.save(vae, tmp_path / "src"), tmp_path / "out")
  module = convert.load_module(tmp_path / "out", "sd_vae")
  assert module.spatial_factor == 2 ** (len(config["block_out_channels"]) - 1)
  x, z = _inputs(config, SIZE)
  hf_models.assert_vae_matches(_ours(module, x, z), _torch_outputs(vae, x, z))


def test_bfloat16_compute_stays_close(small):
  _, out, (x, z), ref = small
  bf16 = convert.load_module(out, "sd_vae", dtype=jnp.bfloat16)
  params = nnx.state(bf16, nnx.Param)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.to_pure_dict(params)))   # parameters stay fp32
  ours = _ours(bf16, x, z)
  for a, b in zip(ours, ref):
    assert a.dtype == np.float32 and np.all(np.isfinite(a))
    assert hf_models.max_diff(a, b) < 0.05 * max(1.0, float(np.max(np.abs(b)))), hf_models.max_diff(a, b)
  print("bf16 max abs differences:", [hf_models.max_diff(a, b) for a, b in zip(ours, ref)])


def test_hf_sources_cover_every_parameter():
  module_config = sd_vae.module_config_from_hf(dict(hf_models.sd_vae(SMALL).config))
  shapes = convert.abstract_shapes("sd_vae", module_config)
  sources = sd_vae.hf_sources(module_config)
  assert set(sources) == set(shapes)
  assert sources["encoder.mid_block.attentions.0.to_out.kernel"] == convert.Source(
      "encoder.mid_block.attentions.0.to_out.0.weight", "linear",
      ("encoder.mid_block.attentions.0.proj_attn.weight",))
  assert sources["decoder.up_blocks.0.upsamplers.0.conv.kernel"].layout == "conv2d"
  assert sources["encoder.conv_norm_out.scale"] == convert.Source("encoder.conv_norm_out.weight")
  assert sd_vae.IGNORED_HF == ()


def test_module_config_from_hf():
  hf = dict(hf_models.sd_vae(SMALL).config)
  config = sd_vae.module_config_from_hf(hf)
  assert json.loads(json.dumps(config)) == config
  assert config["block_out_channels"] == [32, 64] and config["shift_factor"] == 0.0
  assert sd_vae.module_config_from_hf({**hf, "shift_factor": 0.1159})["shift_factor"] == pytest.approx(0.1159)
  for field, value in [("act_fn", "gelu"), ("down_block_types", ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]),
                       ("up_block_types", ["UpDecoderBlock2D"]), ("norm_num_groups", 5)]:
    with pytest.raises(ValueError, match=field):
      sd_vae.module_config_from_hf({**hf, field: value})


def _wrong_shape(tensors):
  tensors["decoder.up_blocks.1.resnets.0.conv1.weight"] = np.zeros((32, 32, 3, 1), np.float32)


def _deleted(tensors):
  del tensors["encoder.mid_block.attentions.0.to_k.bias"]


def _extra(tensors):
  tensors["encoder.extra.weight"] = np.zeros((3,), np.float32)


@pytest.mark.parametrize("edit, tensor", [(_wrong_shape, "decoder.up_blocks.1.resnets.0.conv1.weight"),
                                          (_deleted, "encoder.mid_block.attentions.0.to_k.bias"),
                                          (_extra, "encoder.extra.weight")])
def test_bad_source_raises_and_writes_nothing(small, tmp_path, edit, tensor):
  src = hf_models.edited_source(small[0], tmp_path, WEIGHTS, edit)
  out = tmp_path / "out"
  with pytest.raises(convert.ConversionError, match=re.escape(f"tensor {tensor!r}")):
    convert.convert("sd_vae", src, out)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["edited"]   # neither out nor a temporary directory


def test_old_attention_names_convert_the_same(small, tmp_path):
  src, out, _, _ = small

  def rename(tensors):
    for name in [n for n in tensors if ".attentions.0." in n]:
      old = name
      for new, before in [("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")]:
        old = old.replace(f".{new}.", f".{before}.")
      tensors[old] = tensors.pop(name)
    assert any(".proj_attn." in n for n in tensors) and not any(".to_q." in n for n in tensors)

  convert.convert("sd_vae", hf_models.edited_source(src, tmp_path, WEIGHTS, rename), tmp_path / "out")
  _, renamed = convert.read_converted(tmp_path / "out", "sd_vae")
  _, reference = convert.read_converted(out, "sd_vae")
  assert renamed.keys() == reference.keys()
  for name in reference:
    np.testing.assert_array_equal(renamed[name], reference[name], err_msg=name)
