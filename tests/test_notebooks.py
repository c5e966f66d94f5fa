"""The notebooks run top to bottom: quickstart trains tiny:test for real; ablation_analysis reads a synthetic
ablations.json made with the library's own summary code."""
import pathlib

import nbclient
import nbformat
import numpy as np
import pytest

from vin_jax import ablation
from vin_jax import config as config_lib
from vin_jax.evaluation import report

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


@pytest.fixture
def kernel_env(monkeypatch):
  """The kernel inherits os.environ when it starts: one CPU device (not the suite's 8 simulated ones, which
  train.train would reject for a 1x1x1 mesh). monkeypatch restores everything afterwards."""
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.delenv("VIN_ABLATIONS_JSON", raising=False)
  return monkeypatch


def execute(name: str) -> nbformat.NotebookNode:
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), f"{name} is stored with outputs"
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
  client.execute()  # raises CellExecutionError (with the cell's traceback) on the first failing cell
  errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs if out.output_type == "error"]
  assert not errors, errors
  return nb


def stdout_of(nb) -> str:
  return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
                 if out.output_type == "stream" and out.name == "stdout")


def test_quickstart_runs(kernel_env):
  nb = execute("quickstart.ipynb")
  text = stdout_of(nb)
  assert "mawe_dis: " in text
  value = text.split("mawe_dis: ", 1)[1].split()[0]
  assert value == "None" or np.isfinite(float(value)), value
  assert any(out.output_type == "display_data" and "image/png" in out.get("data", {})
             for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs), "no figure shown"


def fake_ablation(path: pathlib.Path):
  """ablations.json as `ablate` writes it, from fabricated per-video metrics (4 videos per row)."""
  config = config_lib.load_config_file(REPO / "configs" / "micro.py")
  config = config_lib.override(config, {"ablation.rows": "no_fusion,late_fusion"})
  selected = ablation.selected_rows(config)
  rng = np.random.default_rng(0)
  results = {}
  for offset, row in enumerate(selected):
    videos = [{"mawe_dis": 1.0 + 0.3 * offset + 0.05 * rng.standard_normal(), "scene_cuts": int(rng.integers(0, 3)),
               "identity_consistency": float(rng.uniform()), "true_color_match": float(rng.uniform()),
               "frame_diff_boundary_ratio": 1.0 + 0.1 * offset} for _ in range(4)]
    results[row.name] = {"videos": videos, "mean": report.summarize(videos), "num_videos": len(videos)}
  rows = ablation.summarize_rows(selected, results)
  report.write_json_atomic(path, {"rows": rows, "paper_source": ablation.PAPER_SOURCE})
  return rows


def test_ablation_analysis_runs(kernel_env, tmp_path):
  rows = fake_ablation(tmp_path / "ablations.json")
  assert [r["name"] for r in rows] == [ablation.REFERENCE_ROW, "no_fusion", "late_fusion"]
  kernel_env.setenv("VIN_ABLATIONS_JSON", str(tmp_path / "ablations.json"))
  nb = execute("ablation_analysis.ipynb")
  text = stdout_of(nb)
  assert "| w/o fusion | 1.13 | 1.00 |" in text and "| Late fusion | 1.22 | 0.74 |" in text
  figures = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
             if out.output_type == "display_data" and "image/png" in out.get("data", {})]
  assert len(figures) == 2


def test_ablation_analysis_explains_a_missing_file(kernel_env, tmp_path):
  kernel_env.setenv("VIN_ABLATIONS_JSON", str(tmp_path / "missing.json"))
  nb = nbformat.read(NOTEBOOKS / "ablation_analysis.ipynb", as_version=4)
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
  with pytest.raises(nbclient.exceptions.CellExecutionError, match="FileNotFoundError"):
    client.execute()
  first_code = next(cell for cell in nb.cells if cell.cell_type == "code")
  printed = "".join(out.get("text", "") for out in first_code.outputs if out.output_type == "stream")
  assert "python -m vin_jax.main ablate" in printed
