"""Config variants validate; inconsistent configs fail in `validate` with a ConfigError naming the field."""
import math
import pathlib

import pytest

from vin_jax import config as config_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def load(name="tiny", arg=None):
  return config_lib.load_config_file(REPO / "configs" / f"{name}.py", arg)


@pytest.mark.parametrize("name,arg", [("tiny", None), ("tiny", "test"), ("micro", None), ("micro", "hidden"),
                                      ("base", None)])
def test_cpu_configs_validate(name, arg):
  config_lib.validate(load(name, arg))
  config_lib.validate(load(name, arg), num_devices=1)


def test_paper_config_validates_once_it_names_its_vae_and_a_video_folder():
  config = load("paper")
  with pytest.raises(config_lib.ConfigError, match="autoencoder.weights"):
    config_lib.validate(config)
  config.autoencoder.weights = "/converted/sd_vae"
  with pytest.raises(config_lib.ConfigError, match="data.latents"):   # precomputed T5 embeddings
    config_lib.validate(config)
  config.data.latents = True
  with pytest.raises(config_lib.ConfigError, match="data.video_dir"):
    config_lib.validate(config)
  config.data.video_dir = "/videos"
  config_lib.validate(config)
  config_lib.validate(config, num_devices=config.mesh.data * config.mesh.chunk * config.mesh.fsdp)


def test_paper_wan_variant_keeps_the_latent_timeline_and_counts_frames_causally():
  per_frame, wan = load("paper"), load("paper", "wan")
  assert config_lib.keyframe_stride(wan) == config_lib.keyframe_stride(per_frame) == 5
  assert config_lib.latent_frames_of(wan, wan.data.num_frames) == per_frame.data.num_frames == 80
  assert [config_lib.pixel_frames_of(wan, t) for t in (1, 2, 20, 80)] == [1, 5, 77, 317]
  assert [config_lib.latent_frames_of(wan, t) for t in (1, 5, 317)] == [1, 2, 80]
  assert config_lib.pixel_frames_of(per_frame, 20) == 20
  wan.autoencoder.weights, wan.data.video_dir = "/converted/wan_vae", "/videos"
  with pytest.raises(config_lib.ConfigError, match="data.latents=False: must be True to train with the causal"):
    config_lib.validate(wan)
  wan.data.latents = True
  config_lib.validate(wan)
  wan.data.num_frames = 316
  with pytest.raises(config_lib.ConfigError, match="data.num_frames=316: must be 1 \\+ 4 k pixel frames"):
    config_lib.validate(wan)
  wan.data.num_frames = 1 + 4 * 78           # 79 latent frames < the 80 of the longest bucket
  with pytest.raises(config_lib.ConfigError, match="80 latent frames = 317 pixel frames"):
    config_lib.validate(wan)
  with pytest.raises(config_lib.ConfigError, match="unknown variant"):
    load("paper", "wan3d")


@pytest.mark.parametrize("seconds,stride", [(1.0, 5), (0.5, 2), (0.2, 1)])
def test_paper_keyframe_stride(seconds, stride):
  # T_s * fps / temporal_factor = seconds * 5 / 1 (the 3D VAE's 16 / 3.2): 5, 2.5 -> 2 (round half to even), 1.
  config = load("paper")
  config.chunking.keyframe_seconds = seconds
  assert config_lib.keyframe_stride(config) == stride


def test_tiny_keyframe_stride_and_latent_shape():
  config = load("tiny")
  assert config_lib.keyframe_stride(config) == 4                  # 0.5 s * 8 fps / 1
  assert config_lib.latent_shape(config) == (8, 8, 12)            # 16 / 2, 3 * 2 ** 2
  assert config_lib.pixel_frames_per_chunk(config) == 8
  assert config_lib.fusion_steps(config) == 20                         # t_alpha 0: every step fuses


def _set(**fields):
  """A mutation of the tiny config: _set(**{"a.b": value})."""
  return lambda config: config_lib.override(config, fields)


# (id, mutation of configs/tiny.py, the field the error must name). tiny: F = 8, L = 4, keyframe stride 4,
# 16x16 pixels with autoencoder x2 and patch 2, buckets (1, 2, 4) of 8 pixel frames, 32 frames stored, batch 8.
INVALID = [
    ("context_longer_than_chunk", _set(**{"chunking.context_frames": 9}), "chunking.context_frames"),
    ("negative_context", _set(**{"chunking.context_frames": -1}), "chunking.context_frames"),
    ("inference_context_longer_than_chunk", _set(**{"chunking.inference_context_frames": 10}),
     "chunking.inference_context_frames"),
    ("chunk_not_multiple_of_temporal_patch",
     _set(**{"model.temporal_patch": 2, "chunking.chunk_frames": 5}), "chunking.chunk_frames"),
    ("context_not_multiple_of_temporal_patch",
     _set(**{"model.temporal_patch": 2, "chunking.context_frames": 3}), "chunking.context_frames"),
    ("inference_context_not_multiple_of_temporal_patch",
     _set(**{"model.temporal_patch": 2, "chunking.inference_context_frames": 3}),
     "chunking.inference_context_frames"),
    ("height_not_divisible_by_autoencoder_times_patch", _set(**{"data.height": 18}), "data.height"),
    ("width_not_divisible_by_autoencoder_times_patch", _set(**{"data.width": 10}), "data.width"),
    ("t_alpha_above_num_steps", _set(**{"sampling.t_alpha": 21}), "sampling.t_alpha"),
    ("t_alpha_negative", _set(**{"sampling.t_alpha": -1}), "sampling.t_alpha"),
    ("no_global_tokens", _set(**{"vin.num_global_tokens": 0}), "vin.num_global_tokens"),
    ("negative_global_tokens", _set(**{"vin.num_global_tokens": -4}), "vin.num_global_tokens"),
    ("unknown_objective", _set(**{"diffusion.objective": "x0"}), "diffusion.objective"),
    ("unknown_schedule", _set(**{"diffusion.schedule": "sigmoid"}), "diffusion.schedule"),
    ("unknown_fusion", _set(**{"sampling.fusion": "always"}), "sampling.fusion"),
    ("unknown_method", _set(**{"sampling.method": "magic"}), "sampling.method"),
    ("unknown_window_mode", _set(**{"model.window_mode": "sliding"}), "model.window_mode"),
    ("unknown_dtype", _set(**{"model.dtype": "float16"}), "model.dtype"),
    ("unknown_data_set", _set(**{"data.name": "kinetics"}), "data.name"),
    ("unknown_text_encoder", _set(**{"text.encoder": "clip"}), "text.encoder"),
    ("t5_without_width", _set(**{"text.encoder": "t5", "text.t5_dir": "/t5"}), "text.precomputed_dim"),
    ("t5_without_weights", _set(**{"text.encoder": "t5", "text.precomputed_dim": 32}), "text.t5_dir"),
    ("precomputed_text_training_on_frames", _set(**{"text.encoder": "precomputed", "text.precomputed_dim": 32}),
     "text.encoder"),
    ("unknown_autoencoder", _set(**{"autoencoder.kind": "vqgan"}), "autoencoder.kind"),
    ("sd_vae_without_latent_channels", _set(**{"autoencoder.kind": "sd_vae", "autoencoder.weights": "/vae"}),
     "autoencoder.latent_channels"),
    ("sd_vae_without_weights", _set(**{"autoencoder.kind": "sd_vae", "autoencoder.latent_channels": 4}),
     "autoencoder.weights"),
    ("sd_vae_over_two_frames", _set(**{"autoencoder.kind": "sd_vae", "autoencoder.latent_channels": 4,
                                       "autoencoder.weights": "/vae", "autoencoder.temporal_factor": 2.0}),
     "autoencoder.temporal_factor"),
    ("interpolation_every_frame", _set(**{"diffusion.clean_every": 1}), "diffusion.clean_every"),
    ("negative_image_guidance", _set(**{"sampling.image_guidance_scale": -1.0}), "sampling.image_guidance_scale"),
    ("model_width_not_divisible_by_heads", _set(**{"model.width": 66}), "model.width"),
    ("vin_width_not_divisible_by_heads", _set(**{"vin.width": 30}), "vin.width"),
    ("text_width_not_divisible_by_heads", _set(**{"text.width": 33}), "text.width"),
    ("odd_head_dim", _set(**{"model.width": 36}), "model.num_heads"),          # 36 / 4 = 9
    ("num_frames_shorter_than_longest_bucket", _set(**{"data.num_frames": 31}), "data.num_frames"),
    ("bucket_weights_length_mismatch", _set(**{"data.bucket_weights": (1.0, 1.0)}), "data.bucket_weights"),
    ("negative_bucket_weight", _set(**{"data.bucket_weights": (1.0, -1.0, 1.0)}), "data.bucket_weights"),
    ("all_bucket_weights_zero", _set(**{"data.bucket_weights": (0.0, 0.0, 0.0)}), "data.bucket_weights"),
    ("empty_buckets", _set(**{"data.bucket_chunks": (), "data.bucket_weights": ()}), "data.bucket_chunks"),
    ("zero_chunk_bucket", _set(**{"data.bucket_chunks": (0, 2, 4)}), "data.bucket_chunks"),
    ("probability_above_one", _set(**{"text.drop_prob": 1.5}), "text.drop_prob"),
    ("negative_probability", _set(**{"diffusion.first_frame_cond_prob": -0.1}), "diffusion.first_frame_cond_prob"),
    ("ema_decay_above_one", _set(**{"train.ema_decay": 1.01}), "train.ema_decay"),
    ("warmup_longer_than_training", _set(**{"train.warmup_steps": 100_001, "train.steps": 100_000}), "train.warmup_steps"),
    ("warmup_as_long_as_training", _set(**{"train.warmup_steps": 500, "train.steps": 500}), "train.warmup_steps"),
    ("chunk_not_divisible_by_keyframe_stride", _set(**{"chunking.keyframe_seconds": 0.375}),  # stride 3
     "chunking.chunk_frames"),
    ("chunk_not_divisible_by_keyframe_stride_6", _set(**{"chunking.chunk_frames": 6}), "chunking.chunk_frames"),
    ("batch_not_divisible_by_mesh_data", _set(**{"mesh.data": 3}), "data.batch_size"),
    ("batch_not_divisible_by_mesh_fsdp", _set(**{"mesh.fsdp": 16}), "data.batch_size"),
    ("bucket_not_divisible_by_mesh_chunk", _set(**{"mesh.chunk": 2}), "data.bucket_chunks"),
    ("full_attention_split_over_chunk_devices", _set(**{"model.window_mode": "full", "mesh.chunk": 2}),
     "model.window_mode"),
    ("video_folder_without_video_dir", _set(**{"data.name": "video_folder"}), "data.video_dir"),
    ("video_folder_without_validation", _set(**{"data.name": "video_folder", "data.video_dir": "/videos",
                                                "data.validation_clips": 0}), "data.validation_clips"),
    ("sprite_bigger_than_frame", _set(**{"data.sprite_size": 17}), "data.sprite_size"),
    ("freenoise_stride_longer_than_chunk", _set(**{"sampling.method": "freenoise", "sampling.freenoise_stride": 9}),
     "sampling.freenoise_stride"),
    ("fractional_patch_temporal_factor",
     _set(**{"autoencoder.temporal_factor": 1.5, "chunking.keyframe_seconds": 0.75}), "autoencoder.temporal_factor"),
    ("zero_depth", _set(**{"model.depth": 0}), "model.depth"),
    ("zero_chunk_frames", _set(**{"chunking.chunk_frames": 0}), "chunking.chunk_frames"),
    ("zero_sampling_steps", _set(**{"sampling.num_steps": 0, "sampling.t_alpha": 0}), "sampling.num_steps"),
    ("nan_learning_rate", _set(**{"train.learning_rate": math.nan}), "train.learning_rate"),
    ("infinite_learning_rate", _set(**{"train.learning_rate": math.inf}), "train.learning_rate"),
    ("negative_guidance", _set(**{"sampling.guidance_scale": -1.0}), "sampling.guidance_scale"),
    ("global_token_dropout_of_one", _set(**{"vin.drop_prob": 1.0}), "vin.drop_prob"),
    ("negative_global_guidance", _set(**{"sampling.global_guidance_scale": -1.0}), "sampling.global_guidance_scale"),
    ("global_guidance_without_vin", _set(**{"sampling.global_guidance_scale": 2.0, "vin.enabled": False}),
     "sampling.global_guidance_scale"),
    ("global_guidance_fraction_zero", _set(**{"sampling.global_guidance_fraction": 0.0}),
     "sampling.global_guidance_fraction"),
    ("global_guidance_with_joint_guidance",
     _set(**{"sampling.global_guidance_scale": 2.0, "sampling.image_guidance_scale": 1.5}),
     "sampling.global_guidance_scale"),
    ("negative_context_loss_weight", _set(**{"diffusion.context_loss_weight": -0.5}),
     "diffusion.context_loss_weight"),
    ("negative_grad_clip", _set(**{"train.grad_clip": -1.0}), "train.grad_clip"),
    ("unknown_caption_detail", _set(**{"data.caption_detail": 3}), "data.caption_detail"),
    ("negative_processor_depth", _set(**{"vin.processor_depth": -1}), "vin.processor_depth"),
    ("negative_sprites", _set(**{"data.num_sprites": -1}), "data.num_sprites"),
]


def test_sampling_checks_its_own_mesh_constraints():
  """`sample` needs the videos, not the training buckets, to split over the mesh (and vice versa)."""
  config = load("tiny")
  config.mesh.data, config.mesh.chunk = 2, 4        # 1-chunk training buckets cannot split over 4
  with pytest.raises(config_lib.ConfigError, match="data.bucket_chunks="):
    config_lib.validate(config, num_devices=8, purpose="train")
  config_lib.validate(config, num_devices=8, purpose="sample")
  config.sampling.num_chunks = 6
  with pytest.raises(config_lib.ConfigError, match="sampling.num_chunks="):
    config_lib.validate(config, num_devices=8, purpose="sample")
  config.sampling.num_chunks, config.sampling.num_samples = 8, 3
  with pytest.raises(config_lib.ConfigError, match="sampling.num_samples="):
    config_lib.validate(config, num_devices=8, purpose="sample")


@pytest.mark.parametrize("mutate,field", [pytest.param(m, f, id=i) for i, m, f in INVALID])
def test_invalid_config_names_the_field(mutate, field):
  config = load("tiny")
  config_lib.validate(config)  # the starting point is valid: the mutation alone breaks it
  mutate(config)
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(config)
  assert f"{field}=" in str(info.value), str(info.value)


def test_invalid_config_ids_are_distinct():
  assert len({i for i, _, _ in INVALID}) == len(INVALID) >= 20


@pytest.mark.parametrize("num_devices", [2, 8])
def test_mesh_must_cover_the_devices(num_devices):
  config = load("tiny")
  with pytest.raises(config_lib.ConfigError, match=r"mesh\.chunk=1") as info:
    config_lib.validate(config, num_devices=num_devices)
  assert str(num_devices) in str(info.value)
  config.mesh.data, config.mesh.chunk = 2, num_devices // 2   # 8 = 2 x 4; 2 = 2 x 1
  config.data.bucket_chunks = (4,) if num_devices == 8 else (1, 2, 4)
  config.data.bucket_weights = (1.0,) * len(config.data.bucket_chunks)
  config_lib.validate(config, num_devices=num_devices)


def test_config_error_is_a_value_error():
  assert issubclass(config_lib.ConfigError, ValueError)


def test_missing_config_file():
  with pytest.raises(config_lib.ConfigError, match="does not exist"):
    load("nonexistent")


def test_parse_variants():
  assert config_lib.parse_variants("runlocal, steps=10,,") == {"runlocal": True, "steps": "10"}
  assert config_lib.parse_variants(None) == {}


def test_resolve_data_dir(monkeypatch):
  config = load("tiny")
  monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
  assert config_lib.resolve_data_dir(config, "/run") == "/run/data"
  with pytest.raises(config_lib.ConfigError, match="data.data_dir"):
    config_lib.resolve_data_dir(config, None)
  monkeypatch.setenv("TFDS_DATA_DIR", "/tfds")
  assert config_lib.resolve_data_dir(config, "/run") == "/tfds"
  config.data.data_dir = "/explicit"
  assert config_lib.resolve_data_dir(config, "/run") == "/explicit"
