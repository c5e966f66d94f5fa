"""Pretrained weights in Hugging Face layouts -> vin_jax's Flax modules, and back from disk.

    python -m vin_jax.main convert --kind=sd_vae|wan_vae|t5 --src=DIR_OR_FILE --out=OUT

A kind is a module of this package's `KINDS` with four names:
  module_config_from_hf(hf_config: dict) -> dict   the Flax module's settings from the source's config.json
  build(module_config: dict, rngs) -> nnx.Module    the module (random weights)
  hf_sources(module_config) -> {flax name: Source}  where each Flax parameter comes from
  IGNORED_HF: tuple of regexes                      source tensors that are known and deliberately unused

Sources are read from safetensors only (never pickle). Every Flax parameter must come from a tensor of the
right shape, and every source tensor must be used or ignored; otherwise `ConversionError` names them all.
A converted directory reads like an export (`vin_jax.export.files`): model.safetensors with dotted Flax names,
export_info.json with sizes and checksums, and convert.json {"kind", "module_config", "source"}.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import pathlib
import re
import shutil
from typing import Any

import numpy as np

KINDS = {"sd_vae": "vin_jax.autoencoder.sd_vae", "t5": "vin_jax.text.t5",
         "wan_vae": "vin_jax.autoencoder.wan_vae"}
CONVERT_FILE = "convert.json"
TOKENIZER_FILE = "spiece.model"   # copied from the source directory when present (T5's SentencePiece model)


class ConversionError(ValueError):
  """A source cannot be converted; the message names the file or tensors at fault."""


# How a Hugging Face (PyTorch) tensor becomes a Flax parameter.
_LAYOUTS = {
    "same": lambda x: x,
    "linear": lambda x: x.T,                           # [out, in] -> [in, out]
    "conv2d": lambda x: x.transpose(2, 3, 1, 0),       # [O, I, kh, kw] -> [kh, kw, I, O]
    "conv3d": lambda x: x.transpose(2, 3, 4, 1, 0),    # [O, I, kt, kh, kw] -> [kt, kh, kw, I, O]
    "linear_from_conv1x1": lambda x: x[:, :, 0, 0].T,  # a 1x1 conv [O, I, 1, 1] used as a linear layer
    "reverse_axes": lambda x: x.transpose(tuple(range(x.ndim))[::-1]),   # [C, 1, 1(, 1)] -> [(1,) 1, 1, C]
}
# The source shape each layout needs for a Flax shape (to name a wrong shape before transforming).
_SOURCE_SHAPES = {
    "same": lambda s: s,
    "linear": lambda s: s[::-1],
    "conv2d": lambda s: (s[3], s[2], s[0], s[1]),
    "conv3d": lambda s: (s[4], s[3], s[0], s[1], s[2]),
    "linear_from_conv1x1": lambda s: (s[1], s[0], 1, 1),
    "reverse_axes": lambda s: s[::-1],
}


@dataclasses.dataclass(frozen=True)
class Source:
  """A Flax parameter's source tensor `name`, in `layout` (a key of _LAYOUTS); the first of `name` and
  `aliases` that the source holds is used (e.g. T5's tied `shared.weight` / `encoder.embed_tokens.weight`)."""
  name: str
  layout: str = "same"
  aliases: tuple[str, ...] = ()

  def pick(self, tensors) -> str:
    return next((n for n in (self.name, *self.aliases) if n in tensors), self.name)

  def __post_init__(self):
    if self.layout not in _LAYOUTS:
      raise ValueError(f"layout={self.layout!r} must be one of {tuple(_LAYOUTS)}")


def kind_module(kind: str):
  if kind not in KINDS:
    raise ConversionError(f"--kind={kind!r} must be one of {tuple(KINDS)}")
  return importlib.import_module(KINDS[kind])


# ----------------------------------------------------------------------------------------------
# Reading a Hugging Face source.

def source_files(src: str | pathlib.Path) -> tuple[list[pathlib.Path], pathlib.Path]:
  """(safetensors files, config.json) of a source directory or a single .safetensors file."""
  src = pathlib.Path(src)
  if not src.exists():
    raise ConversionError(f"--src={str(src)!r} does not exist")
  root = src if src.is_dir() else src.parent
  if src.is_file():
    if src.suffix != ".safetensors":
      raise ConversionError(f"--src={str(src)!r} is not a .safetensors file (pickled .bin/.pt weights are not read)")
    files = [src]
  else:
    files = sorted(src.glob("*.safetensors"))
    if not files:
      pickled = sorted(p.name for p in src.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
      hint = f"; it has {pickled}, which are pickle files and are not read: save with safe_serialization" if pickled else ""
      raise ConversionError(f"--src={str(src)!r} holds no .safetensors file{hint}")
  config = root / "config.json"
  if not config.is_file():
    raise ConversionError(f"{config} is missing: the source's config.json (written by save_pretrained) gives "
                          "the architecture")
  return files, config


def read_source(src: str | pathlib.Path) -> tuple[dict[str, np.ndarray], dict]:
  """({tensor name: float32 array}, the source's config.json) of a directory or .safetensors file."""
  from safetensors import SafetensorError, safe_open
  files, config_path = source_files(src)
  try:
    hf_config = json.loads(config_path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConversionError(f"cannot read {config_path}: {e}") from None
  tensors: dict[str, np.ndarray] = {}
  for path in files:
    try:
      with safe_open(path, framework="np") as f:
        for name in f.keys():
          if name in tensors:
            raise ConversionError(f"tensor {name!r} appears in more than one file ({path})")
          tensors[name] = _to_float32(f.get_tensor(name))
    except SafetensorError as e:
      raise ConversionError(f"{path} is not a valid safetensors file: {e}") from None
  return tensors, hf_config


def _to_float32(x: np.ndarray) -> np.ndarray:
  return np.asarray(x, np.float32) if np.issubdtype(x.dtype, np.floating) or x.dtype.name == "bfloat16" else x


# ----------------------------------------------------------------------------------------------
# Matching names and shapes.

def map_tensors(expected: dict[str, tuple[int, ...]], sources: dict[str, Source], tensors: dict[str, np.ndarray],
                ignored: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
  """{Flax name: array} for every name of `expected` ({Flax name: shape}), each taken from `tensors` as
  `sources` says. Raises ConversionError listing every missing, wrongly shaped and unexpected tensor."""
  problems, out, used = [], {}, set()
  for name, shape in expected.items():
    source = sources.get(name)
    if source is None:
      problems.append(f"Flax parameter {name!r} {tuple(shape)} has no source rule (a bug in this converter)")
      continue
    source_name = source.pick(tensors)
    if source_name not in tensors:
      problems.append(f"missing tensor {source_name!r} (for {name}, shape {_SOURCE_SHAPES[source.layout](tuple(shape))})")
      continue
    used.update(n for n in (source.name, *source.aliases) if n in tensors)   # an unused alias is a tied copy
    x = tensors[source_name]
    want = tuple(_SOURCE_SHAPES[source.layout](tuple(shape)))
    if tuple(x.shape) != want:
      problems.append(f"tensor {source_name!r} has shape {tuple(x.shape)}, expected {want} (for {name})")
      continue
    out[name] = np.ascontiguousarray(_LAYOUTS[source.layout](x))
  extra = sorted(n for n in tensors if n not in used and not any(re.fullmatch(p, n) for p in ignored))
  problems += [f"unexpected tensor {n!r} {tuple(tensors[n].shape)}" for n in extra]
  if problems:
    shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
    raise ConversionError(f"{len(problems)} tensor problem(s):\n  {shown}")
  return out


def abstract_shapes(kind: str, module_config: dict) -> dict[str, tuple[int, ...]]:
  """{dotted Flax name: shape} of a kind's module, without allocating it."""
  from flax import nnx
  from vin_jax.export import names
  module = kind_module(kind)
  abstract = nnx.eval_shape(lambda: module.build(module_config, nnx.Rngs(0)))
  return {n: tuple(x.shape) for n, x in names.flatten(nnx.to_pure_dict(nnx.state(abstract, nnx.Param))).items()}


# ----------------------------------------------------------------------------------------------
# The command and the loader.

def convert(kind: str, src: str | pathlib.Path, out: str | pathlib.Path, *, force: bool = False) -> dict:
  """Converts a Hugging Face source of `kind` into OUT (atomically). Returns the written export_info."""
  from vin_jax.export import files, writer
  module = kind_module(kind)
  out = pathlib.Path(out).absolute()
  if out.exists() and not force:
    raise ConversionError(f"--out={out} exists: pass --force to replace it")
  tensors, hf_config = read_source(src)
  try:
    module_config = module.module_config_from_hf(hf_config)
  except (KeyError, TypeError, ValueError) as e:
    raise ConversionError(f"{source_files(src)[1]}: not a {kind} config: {e}") from None
  converted = map_tensors(abstract_shapes(kind, module_config), module.hf_sources(module_config), tensors,
                          getattr(module, "IGNORED_HF", ()))
  src_root = pathlib.Path(src) if pathlib.Path(src).is_dir() else pathlib.Path(src).parent
  info = {"kind": kind, "dtype": "float32", "num_params": int(sum(x.size for x in converted.values())),
          "num_tensors": len(converted), "source": str(pathlib.Path(src).absolute()),
          "vin_jax_version": writer.vin_jax_version(), "format": "safetensors"}
  with writer.atomic_directory(out, replace=force) as tmp:
    info["files"] = files.write_weights(tmp, converted, max_shard_bytes=files.DEFAULT_MAX_SHARD_BYTES,
                                        metadata={"format": "vin_jax.convert", "kind": kind})
    (tmp / CONVERT_FILE).write_text(json.dumps({"kind": kind, "module_config": module_config,
                                                "source": info["source"]}, indent=2))
    if (src_root / TOKENIZER_FILE).is_file():
      shutil.copyfile(src_root / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
    (tmp / files.INFO_FILE).write_text(json.dumps(info, indent=2))
  return info


def read_converted(directory: str | pathlib.Path, kind: str) -> tuple[dict, dict[str, np.ndarray]]:
  """(module_config, {dotted Flax name: float32 array}) of a converted directory, after the export checks."""
  from vin_jax.export import ExportError, files
  directory = pathlib.Path(directory)
  meta_path = directory / CONVERT_FILE
  if not meta_path.is_file():
    raise ConversionError(f"{meta_path} is missing: {directory} is not the output of `convert --kind={kind}`")
  try:
    meta = files.read_json(meta_path, "written by convert")
    tensors, _ = files.read_weights(directory)
  except ExportError as e:
    raise ConversionError(str(e)) from None
  if meta.get("kind") != kind:
    raise ConversionError(f"{directory} holds converted {meta.get('kind')!r} weights, not {kind!r}")
  return meta["module_config"], tensors


def load_module(directory: str | pathlib.Path, kind: str, **build_kwargs) -> Any:
  """The kind's nnx module with the converted weights of `directory` (checked name by name and shape by
  shape); `build_kwargs` go to the kind's `build` (e.g. dtype=jnp.bfloat16)."""
  from flax import nnx
  from vin_jax.export import names
  module_config, tensors = read_converted(directory, kind)
  module = kind_module(kind)
  abstract = nnx.eval_shape(lambda: module.build(module_config, nnx.Rngs(0), **build_kwargs))
  graphdef, param_state, rest = nnx.split(abstract, nnx.Param, ...)
  target = nnx.to_pure_dict(param_state)
  shapes = {n: tuple(x.shape) for n, x in names.flatten(target).items()}
  bad = sorted(n for n in shapes if n not in tensors or tuple(tensors[n].shape) != shapes[n])
  if bad:
    raise ConversionError(f"{directory}: tensor {bad[0]!r} is missing or has the wrong shape ({len(bad)} in all); "
                          "convert the source again with this version")
  nnx.replace_by_pure_dict(param_state, names.unflatten_like(target, tensors))
  return nnx.merge(graphdef, param_state, rest)
