"""The precomputed-latents TFDS data set (ArrayRecord) that `train` reads with `data.latents=True`.

`python -m vin_jax.main precompute` (vin_jax/data/precompute.py) encodes a built frames data set part by part
into `parts/`; this builder then packs the parts into records. An example:
  latents         float32 [T / tf, h, w, c]  raw autoencoder outputs: the pipeline applies autoencoder.shift
                                             and .scale as it reads, so the statistics can change without
                                             encoding again
  caption         text
  text_embedding  float32 [text.max_length, text.precomputed_dim], zero at padding (T5; only when
                  text.encoder is "t5" or "precomputed")
  source_index    int64, the example's index in the frames data set's split

The config name carries a digest of everything that changes the stored values: the frames data set, the
autoencoder and its weights' checksums, and the text encoder with its weights' checksums.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from vin_jax import config as config_lib
from vin_jax.data import builder as frames_builder

SPLITS = ("train", "validation")


@dataclasses.dataclass(eq=False)
class LatentsConfig(tfds.core.BuilderConfig):
  parts_dir: str = ""
  latent_shape: tuple = ()     # (T', h, w, c)
  text_shape: tuple = ()       # (Lt, E), or () when no embeddings are stored


def _weights_digest(directory: str) -> str:
  """The checksums of a converted weights directory (its export_info.json), or '' when there is none."""
  info = pathlib.Path(directory) / "export_info.json"
  return info.read_text() if directory and info.is_file() else ""


def stores_text_embeddings(config) -> bool:
  return config.text.encoder in ("t5", "precomputed")


def latents_config_from(config, data_dir: str | pathlib.Path) -> LatentsConfig:
  """The builder config of a run config's precomputed latents under `data_dir`."""
  source = frames_builder.make_builder(_frames_view(config), data_dir)
  ae, t = config.autoencoder, config.text
  latent_frames = config_lib.latent_frames_of(config, config.data.num_frames)
  if abs(latent_frames - round(latent_frames)) > 1e-6:
    whole = "1 + k times" if config_lib.is_causal(config) else "a multiple of"
    raise config_lib.ConfigError(f"data.num_frames={config.data.num_frames} must be {whole} "
                                 f"autoencoder.temporal_factor={ae.temporal_factor} for precomputed latents")
  latent_shape = (int(round(latent_frames)), *config_lib.latent_shape(config))
  text_shape = (int(t.max_length), int(t.precomputed_dim)) if stores_text_embeddings(config) else ()
  identity = {
      "source": f"{source.name}/{source.builder_config.name}", "autoencoder": ae.kind,
      "spatial_factor": ae.spatial_factor, "temporal_factor": ae.temporal_factor,
      "autoencoder_weights": _weights_digest(str(ae.get("weights", ""))) if ae.kind != "patch" else "",
      "autoencoder_dtype": ae.get("dtype", "float32") if ae.kind != "patch" else "",
      "text": t.encoder if stores_text_embeddings(config) else "captions", "text_shape": text_shape,
      "t5": _weights_digest(str(t.get("t5_dir", ""))) if stores_text_embeddings(config) else "",
  }
  digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
  name = f"{source.builder_config.name}-{ae.kind}-{digest}"
  parts = pathlib.Path(data_dir) / "latents_parts" / name
  return LatentsConfig(name=name, description=f"Latents of {identity['source']} ({ae.kind}, text {identity['text']})",
                       parts_dir=str(parts), latent_shape=latent_shape, text_shape=text_shape)


def _frames_view(config):
  """`config` with data.latents off: the frames data set the latents are computed from."""
  view = config.copy_and_resolve_references()
  view.data.latents = False
  return view


def part_path(parts_dir: str | pathlib.Path, split: str, index: int) -> pathlib.Path:
  return pathlib.Path(parts_dir) / split / f"part-{index:06d}.npz"


class Latents(frames_builder._ReproducibleBuilder):
  """Precomputed latents (and T5 embeddings) of a frames data set; see the module docstring."""

  name = "latents"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = []

  def _info(self) -> tfds.core.DatasetInfo:
    c: LatentsConfig = self.builder_config
    features = {"latents": tfds.features.Tensor(shape=tuple(c.latent_shape), dtype=np.float32),
                "caption": tfds.features.Text(),
                "source_index": tfds.features.Tensor(shape=(), dtype=np.int64)}
    if c.text_shape:
      features["text_embedding"] = tfds.features.Tensor(shape=tuple(c.text_shape), dtype=np.float32)
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features),
                                          description=c.description, disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    c: LatentsConfig = self.builder_config
    done = pathlib.Path(c.parts_dir) / "COMPLETE"
    if not done.is_file():
      raise FileNotFoundError(f"the latents of this config are not precomputed ({done} is missing): run "
                              "`python -m vin_jax.main precompute --config=... --workdir=...` first")
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split: str):
    c: LatentsConfig = self.builder_config
    for path in sorted((pathlib.Path(c.parts_dir) / split).glob("part-*.npz")):
      with np.load(path) as part:
        for i in range(len(part["source_index"])):
          example = {"latents": part["latents"][i], "caption": str(part["captions"][i]),
                     "source_index": np.int64(part["source_index"][i])}
          if c.text_shape:
            example["text_embedding"] = part["text_embedding"][i]
          yield int(part["source_index"][i]), example
