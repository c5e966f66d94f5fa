"""Test-wide setup: 8 simulated CPU devices (for the sharding tests), set before JAX starts."""
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# JAX's persistent compilation cache, shared by both xdist workers and every CLI subprocess of the session (they
# inherit the environment): a program compiled once is loaded, not recompiled, by the next test that builds
# it. Programs that compile in under a second are not worth the disk round trip.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".pytest_cache" / "jax_compilation_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

# Upper bound for one subprocess (a CLI run, a two-process job) before a test calls it hung. A liveness bound
# only: passing tests never wait for it, and a slow 2-core CI machine under load must stay well inside it.
SUBPROCESS_TIMEOUT_SECONDS = 900


def one_device_env() -> dict:
  """The environment of a CLI subprocess run as a user would: one CPU device (without the 8 forced here)."""
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env["JAX_PLATFORMS"] = "cpu"
  return env
