"""Checkpoint export and import (#12): `export` -> safetensors + config.json, `sample --params`,
`train --init_from`, and the clear failures of broken exports.

One module workdir holds a saved train state (random params and EMA that differ, so the weights choice
shows) and the tiny test config; the CLI runs on one device, like a user's.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from vin_jax import checkpointing, sampling
from vin_jax import config as config_lib
from vin_jax import train as train_lib
from vin_jax.export import ExportError, config_json, files, init_from, names, writer
from vin_jax.model import ModelDef
from vin_jax.parallel import mesh as mesh_lib

from tests.conftest import REPO, SUBPROCESS_TIMEOUT_SECONDS
from tests.model.helpers import tiny_test_config

STEP = 3


def run_cli(*args):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("VIN_", "XLA_", "TPU_"))}
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run([sys.executable, "-m", "vin_jax.main", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=SUBPROCESS_TIMEOUT_SECONDS)


def assert_ok(result):
  assert result.returncode == 0, result.stderr[-3000:]


def assert_one_line_error(result, *expected):
  assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
  assert "Traceback" not in result.stderr, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith(("error:", "invalid config:"))]
  assert len(errors) == 1, result.stderr
  for text in expected:
    assert text in errors[0], errors[0]


def leaves_by_name(tree) -> dict:
  return {name: np.asarray(x) for name, x in names.flatten(tree).items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A workdir as `train` leaves it (checkpoint of step STEP, config.json) and its params / EMA as numpy."""
  root = tmp_path_factory.mktemp("export")
  config = tiny_test_config(**{"data.data_dir": str(root / "data")})
  workdir = root / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  # Random weights made on the host (compiling the init would dominate the module's time); params != EMA.
  abstract = ModelDef(config).abstract_params()
  params, ema = (jax.device_put(random_like(abstract, seed)) for seed in (1, 2))
  state = {"step": jax.numpy.int32(STEP), "params": params, "opt_state": train_lib.make_optimizer(config).init(params),
           "ema": ema}
  manager = checkpointing.Manager(workdir / "checkpoints", async_save=False)
  manager.save(STEP, state, {"next_index": STEP})
  manager.close()
  return types.SimpleNamespace(root=root, workdir=workdir, config=config, params=leaves_by_name(params),
                               ema=leaves_by_name(ema))


def random_like(abstract, seed: int, scale: float = 0.05):
  """Host arrays N(0, scale) shaped like `abstract`'s leaves (zero-initialised gates would hide a wrong load)."""
  rng = np.random.RandomState(seed)
  return jax.tree.map(lambda a: rng.normal(0.0, scale, a.shape).astype(a.dtype), abstract)


@pytest.fixture(scope="module")
def exported(run):
  """The fp32 EMA export, made through the CLI with the config read from the workdir."""
  out = run.root / "export_fp32"
  result = run_cli("export", f"--workdir={run.workdir}", f"--out={out}")
  assert_ok(result)
  assert "exported the ema weights of step 3" in result.stdout
  return out


def copy_export(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
  shutil.copytree(source, target)
  return target


def rewrite_weights(export_dir: pathlib.Path, tensors: dict) -> None:
  """Replaces the export's weights with `tensors` and records the new checksum, as another exporter would."""
  from safetensors.numpy import save_file
  path = export_dir / files.SINGLE_FILE
  save_file(tensors, path)
  info = json.loads((export_dir / files.INFO_FILE).read_text())
  info["files"] = {files.SINGLE_FILE: files.file_digest(path)}
  (export_dir / files.INFO_FILE).write_text(json.dumps(info))


# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,arg", [("base", None), ("tiny", None), ("tiny", "test"), ("micro", None),
                                      ("paper", None)])
def test_stored_config_round_trips_every_field_and_type(name, arg):
  config = config_lib.load_config_file(REPO / "configs" / f"{name}.py", arg)
  config.data.bucket_chunks, config.data.bucket_weights = (2,), (1.0,)   # one-element tuples: JSON lists
  rebuilt = config_json.config_from_dict(json.loads(config.to_json_best_effort()))

  def same(a, b, path):
    if isinstance(a, dict):
      assert set(a) == set(b), (path, set(a) ^ set(b))
      for key in a:
        same(a[key], b[key], f"{path}.{key}")
    else:
      assert type(a) is type(b) and a == b, (path, a, b)
      if isinstance(a, tuple):
        assert [type(x) for x in a] == [type(x) for x in b], path
  same(config.to_dict(), rebuilt.to_dict(), "config")


def test_stored_config_converts_ints_to_floats_and_names_a_wrong_type():
  values = json.loads(tiny_test_config().to_json_best_effort())
  values["data"]["bucket_weights"], values["train"]["learning_rate"] = [1, 2], 1
  rebuilt = config_json.config_from_dict(values)
  assert rebuilt.data.bucket_weights == (1.0, 2.0) and isinstance(rebuilt.data.bucket_weights[0], float)
  assert isinstance(rebuilt.train.learning_rate, float)
  values["data"]["bucket_chunks"] = "2"
  with pytest.raises(ExportError, match=r"data\.bucket_chunks='2'"):
    config_json.config_from_dict(values)


@pytest.mark.parametrize("text, match", [("{not json", "cannot read .*config.json"),
                                         ("[1, 2]", "config.json must hold a JSON object")])
def test_unreadable_stored_config_names_the_file(tmp_path, text, match):
  (tmp_path / "config.json").write_text(text)
  with pytest.raises(ExportError, match=match):
    config_json.load_config(tmp_path)


def test_export_writes_config_weights_and_info(run, exported):
  assert sorted(p.name for p in exported.iterdir()) == ["config.json", "export_info.json", "model.safetensors"]
  info = json.loads((exported / "export_info.json").read_text())
  assert info["source_workdir"] == str(run.workdir) and info["step"] == STEP
  assert (info["weights"], info["dtype"]) == ("ema", "float32")
  assert info["num_params"] == sum(x.size for x in run.ema.values())
  assert info["vin_jax_version"] == writer.vin_jax_version() != "unknown"
  assert config_json.load_config(exported).to_dict() == run.config.to_dict()
  tensors, _ = files.read_weights(exported)
  assert "dit.blocks.1.attn.q.kernel" in tensors   # nnx list entries are numbers in the dotted name
  assert sorted(tensors) == sorted(run.ema)
  for name, value in run.ema.items():
    np.testing.assert_array_equal(tensors[name], value, err_msg=name)
  assert not list(run.root.glob(".export_fp32.*"))   # the temporary directory was renamed, not left


def test_sample_from_the_export_equals_sample_from_the_workdir(run, exported):
  from_workdir, from_export = run.root / "samples_workdir", run.root / "samples_export"
  assert_ok(run_cli("sample", "--config=configs/tiny.py:test", f"--config.data.data_dir={run.config.data.data_dir}",
                    f"--workdir={run.workdir}", f"--out={from_workdir}", "--seed=5"))
  # No --config: the export's config.json, with a command-line override applied on top.
  assert_ok(run_cli("sample", f"--params={exported}", f"--out={from_export}", "--seed=5",
                    "--config.sampling.t_alpha=2"))
  a, b = (np.load(d / "samples.npz") for d in (from_workdir, from_export))
  np.testing.assert_array_equal(a["latents"], b["latents"])
  np.testing.assert_array_equal(a["frames"], b["frames"])
  info = json.loads((from_export / "sample_info.json").read_text())
  assert info["params"] == str(exported) and info["checkpoint_step"] == STEP


def test_overrides_of_an_exported_config_are_validated(exported, tmp_path):
  result = run_cli("sample", f"--params={exported}", f"--out={tmp_path}", "--config.sampling.t_alpha=99")
  assert_one_line_error(result, "sampling.t_alpha=99")
  result = run_cli("sample", f"--params={exported}", f"--out={tmp_path}", "--config.sampling.bogus=1")
  assert result.returncode == 2 and "Traceback" not in result.stderr and "bogus" in result.stderr


def test_bfloat16_export_loads_and_samples(run, tmp_path):
  out = tmp_path / "export_bf16"
  assert_ok(run_cli("export", f"--workdir={run.workdir}", f"--out={out}", "--dtype=bfloat16", "--weights=params"))
  info = json.loads((out / "export_info.json").read_text())
  assert (info["dtype"], info["weights"]) == ("bfloat16", "params")
  assert info["total_bytes"] == sum(x.size for x in run.params.values()) * 2
  _, params, step = sampling.load_exported(run.config, out)
  assert step == STEP
  for name, value in leaves_by_name(params).items():
    assert value.dtype == np.float32
    np.testing.assert_array_equal(value, run.params[name].astype(files.DTYPES["bfloat16"]).astype(np.float32))
  result = run_cli("sample", f"--params={out}", f"--out={tmp_path / 'samples'}", "--prompt=a video")
  assert_ok(result)
  assert np.isfinite(np.load(tmp_path / "samples" / "samples.npz")["latents"]).all()


def test_sharded_export_index_round_trips(run, tmp_path):
  out = tmp_path / "sharded"
  info = writer.export_checkpoint(run.config, run.workdir, out, max_shard_bytes=64 * 2 ** 10)   # restored on 8 devices
  shards = sorted(p.name for p in out.glob("model-*.safetensors"))
  count = len(shards)
  assert count > 3 and shards == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
  assert not (out / files.SINGLE_FILE).exists() and sorted(info["files"]) == shards
  index = json.loads((out / files.INDEX_FILE).read_text())
  assert set(index) == {"metadata", "weight_map"}
  assert index["metadata"]["total_size"] == sum(x.nbytes for x in run.ema.values())
  assert sorted(index["weight_map"]) == sorted(run.ema) and sorted(set(index["weight_map"].values())) == shards
  config = tiny_test_config(**{"data.data_dir": run.config.data.data_dir, "mesh.fsdp": 8})
  _, params, _ = sampling.load_exported(config, out, mesh=mesh_lib.make_mesh(config))
  assert any("fsdp" in str(x.sharding.spec) for x in jax.tree.leaves(params))
  for name, value in leaves_by_name(params).items():
    np.testing.assert_array_equal(value, run.ema[name], err_msg=name)

  missing = copy_export(out, tmp_path / "missing_shard")
  (missing / shards[1]).unlink()
  with pytest.raises(ExportError, match=f"weights file .*{shards[1]} is missing"):
    sampling.load_exported(run.config, missing)


def test_init_from_loads_matching_weights_and_keeps_the_rest_fresh(run, exported, tmp_path, capsys):
  # A deeper DiT with more global tokens: blocks.2 is new, the VIN's global_init changes shape.
  config = tiny_test_config(**{"model.depth": 3, "vin.num_global_tokens": 8, "mesh.fsdp": 8})
  mesh = mesh_lib.make_mesh(config)
  fresh = train_lib.create_state(ModelDef(config), train_lib.make_optimizer(config), jax.random.key(9), mesh)
  fresh_params, fresh_opt = leaves_by_name(fresh["params"]), jax.tree.map(np.asarray, fresh["opt_state"])
  shardings = {n: x.sharding for n, x in names.flatten(fresh["params"]).items()}
  state = init_from.initialize_state(fresh, str(exported), tmp_path, resumed=False)

  report = json.loads((tmp_path / "init_from.json").read_text())
  status = {row["name"]: kind for kind in ("loaded", "new", "shape_mismatch", "unused") for row in report[kind]}
  assert report["counts"]["new"] > 10 and all(status[n] == "new" for n in fresh_params if n.startswith("dit.blocks.2."))
  assert {"name": "vin.global_init", "shape": [8, 32], "source_shape": [4, 32]} in report["shape_mismatch"]
  counts = report["counts"]
  assert counts["loaded"] == len(run.ema) - counts["shape_mismatch"] - counts["unused"] > 100
  params, ema = leaves_by_name(state["params"]), leaves_by_name(state["ema"])
  for name, value in params.items():
    want = run.ema[name] if status[name] == "loaded" else fresh_params[name]
    np.testing.assert_array_equal(value, want, err_msg=name)
    np.testing.assert_array_equal(ema[name], value, err_msg=name)
    assert names.flatten(state["params"])[name].sharding == shardings[name]
  for got, want in zip(jax.tree.leaves(state["opt_state"]), jax.tree.leaves(fresh_opt)):
    np.testing.assert_array_equal(np.asarray(got), want)

  # From a workdir: its latest checkpoint, here the raw weights.
  source = init_from.read_source(run.workdir, weights="params")
  assert (source.kind, source.step) == ("workdir", STEP)
  for name, value in run.params.items():
    np.testing.assert_array_equal(source.tensors[name], value, err_msg=name)
  # A resumed run keeps its state, and says so.
  assert init_from.initialize_state(state, str(exported), tmp_path, resumed=True) is state
  assert "resuming from it and ignoring --init_from" in capsys.readouterr().out


def test_train_init_from_through_the_cli(run, exported, tmp_path):
  workdir = tmp_path / "finetune"
  command = ["train", "--config=configs/tiny.py:test", f"--workdir={workdir}", f"--init_from={exported}",
             f"--config.data.data_dir={run.config.data.data_dir}", "--config.model.depth=3", "--config.train.steps=1",
             "--config.data.bucket_chunks=(1,)", "--config.data.bucket_weights=(1.0,)"]
  result = run_cli(*command)
  assert_ok(result)
  assert "new (fresh init)" in result.stdout and "dit.blocks.2.attn.q.kernel" in result.stdout
  report = json.loads((workdir / "init_from.json").read_text())
  assert report["kind"] == "export" and report["counts"]["loaded"] == len(run.ema)
  assert (workdir / "checkpoints" / "1").is_dir()   # re-running resumes and ignores --init_from (tested above)

  assert_one_line_error(run_cli("train", "--config=configs/tiny.py:test", f"--workdir={tmp_path / 'x'}",
                                f"--init_from={tmp_path / 'nowhere'}"), "nowhere", "does not exist")


def test_broken_exports_fail_naming_the_file_or_tensor(run, exported, tmp_path):
  truncated = copy_export(exported, tmp_path / "truncated")
  weights = truncated / files.SINGLE_FILE
  weights.write_bytes(weights.read_bytes()[:-100])
  assert_one_line_error(run_cli("sample", f"--params={truncated}", f"--out={tmp_path / 's'}"),
                        "model.safetensors", "truncated")

  tampered = copy_export(exported, tmp_path / "tampered")
  data = bytearray((tampered / files.SINGLE_FILE).read_bytes())
  data[-7] ^= 0xFF
  (tampered / files.SINGLE_FILE).write_bytes(bytes(data))
  with pytest.raises(ExportError, match="model.safetensors does not match its sha256"):
    sampling.load_exported(run.config, tampered)

  with pytest.raises(ExportError, match=r"tensor 'dit.adaln.proj.bias' .* has shape \(192,\), the config's model "
                                        r"needs \(384,\)"):
    sampling.load_exported(tiny_test_config(**{"model.width": 64}), exported)

  edited = copy_export(exported, tmp_path / "edited")
  tensors, _ = files.read_weights(exported)
  rewrite_weights(edited, {**tensors, "dit.extra.kernel": np.zeros((2, 2), np.float32)})
  with pytest.raises(ExportError, match="tensors the config's model does not, e.g. 'dit.extra.kernel'"):
    sampling.load_exported(run.config, edited)
  rewrite_weights(edited, {n: t for n, t in tensors.items() if n != "vin.global_init"})
  with pytest.raises(ExportError, match="lacks 1 of the config's tensors, e.g. 'vin.global_init'"):
    sampling.load_exported(run.config, edited)
  rewrite_weights(edited, {**tensors, "vin.global_init": tensors["vin.global_init"].astype(np.float16)})
  with pytest.raises(ExportError, match="'vin.global_init' .* has dtype F16, the export's dtype is float32"):
    sampling.load_exported(run.config, edited)

  no_config = copy_export(exported, tmp_path / "no_config")
  (no_config / "config.json").unlink()
  assert_one_line_error(run_cli("sample", f"--params={no_config}", f"--out={tmp_path / 's'}"), "no run config")


def test_export_refuses_to_overwrite_without_force(run, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  assert_one_line_error(run_cli("export", f"--workdir={run.workdir}", f"--out={out}"), str(out), "--force")
  assert (out / "keep.txt").read_text() == "mine"
  assert_ok(run_cli("export", f"--workdir={run.workdir}", f"--out={out}", "--force"))
  assert sorted(p.name for p in out.iterdir()) == ["config.json", "export_info.json", "model.safetensors"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]   # no temporary or swapped-out directory left
  assert_one_line_error(run_cli("export", f"--workdir={tmp_path / 'none'}", f"--out={tmp_path / 'x'}"),
                        "no run config")


def test_a_failed_export_leaves_no_output(run, tmp_path, monkeypatch):
  import safetensors.numpy
  real_save, calls = safetensors.numpy.save_file, []

  def failing_save(tensors, path, metadata=None):
    calls.append(path)
    if len(calls) == 2:
      raise OSError("disk full (simulated)")
    real_save(tensors, path, metadata=metadata)

  monkeypatch.setattr(safetensors.numpy, "save_file", failing_save)
  with pytest.raises(OSError, match="disk full"):
    writer.export_checkpoint(run.config, run.workdir, tmp_path / "out", max_shard_bytes=64 * 2 ** 10)
  assert list(tmp_path.iterdir()) == []   # neither OUT nor the temporary directory

  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "old.txt").write_text("previous export")
  calls.clear()
  with pytest.raises(OSError, match="disk full"):
    writer.export_checkpoint(run.config, run.workdir, tmp_path / "out", force=True, max_shard_bytes=64 * 2 ** 10)
  assert [p.name for p in tmp_path.iterdir()] == ["out"] and (tmp_path / "out" / "old.txt").exists()
