"""Shared fixtures of the data tests: the tiny test config and one sprite data set built per session."""
import pathlib

import pytest

from vin_jax import config as config_lib
from vin_jax.data import builder

REPO = pathlib.Path(__file__).resolve().parents[2]


def load_test_config():
  """A fresh `configs/tiny.py:test` (16 videos of 16 frames, 8x8, chunks of 4 pixel frames, batch 2)."""
  return config_lib.load_config_file(REPO / "configs" / "tiny.py", "test")


@pytest.fixture
def config():
  return load_test_config()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> pathlib.Path:
  """A data dir holding the sprite data set of the test config (tests may change non-`data` fields only)."""
  path = tmp_path_factory.mktemp("tfds")
  builder.build_dataset(load_test_config(), path)
  return path
