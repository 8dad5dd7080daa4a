"""Test session set-up: 8 fake CPU devices, offline hubs, a persistent compile cache.

Everything here must happen before jax is imported anywhere, so it lives at module import time.
"""

import os
import pathlib

_ROOT = pathlib.Path(__file__).resolve().parents[1]

# 8 fake CPU devices so the sharded paths (data x expert meshes) run in CI.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Compilation dominates test time on 2 cores: reuse compiled executables across runs.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_ROOT / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

REFERENCE_DIR = _ROOT.parent / "shared" / "fixtures" / "reference"


def pytest_collection_modifyitems(config, items):
  """Skips `gpu`-marked tests when no accelerator is present."""
  del config
  if jax.default_backend() != "cpu":
    return
  skip = pytest.mark.skip(reason="needs an accelerator (GPU/TPU); this run is CPU-only")
  for item in items:
    if "gpu" in item.keywords:
      item.add_marker(skip)


@pytest.fixture(scope="session")
def reference_dir():
  """The authors' PyTorch reference outputs (shared/fixtures/reference)."""
  if not REFERENCE_DIR.is_dir():
    pytest.fail(f"reference fixtures not found at {REFERENCE_DIR}")
  return REFERENCE_DIR
