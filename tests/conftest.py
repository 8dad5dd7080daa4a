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
# The tests' arrays are tiny, so XLA's optimisation passes cost far more than they save: without them
# the suite compiles about twice as fast (subprocesses that tests start inherit this too). Results are
# the same programs' results; tolerances are unchanged.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

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


def make_random_store(
  path, *, n=(48, 16, 16), task="binary", num_classes=2, text_len=8, image_len=4, dim=8, seed=0
):
  """A small random feature store (text with padding + image), for tests that need any store."""
  import numpy as np

  from flmoe_jax.data import store

  rng = np.random.default_rng(seed)
  mods = [
    store.ModalitySpec(name="text", dim=dim, max_len=text_len, kind="tokens", encoder="random"),
    store.ModalitySpec(name="image", dim=dim, max_len=image_len, kind="patches", encoder="random"),
  ]
  splits = {}
  for name, k in zip(("train", "val", "test"), n):
    lens = rng.integers(2, text_len + 1, size=(k, 1))
    text = rng.normal(size=(k, text_len, dim)).astype(np.float32)
    image = rng.normal(size=(k, image_len, dim)).astype(np.float32)
    # A learnable signal: the label is the sign of a feature of token 1 times one of patch 0.
    if task == "multilabel":
      labels = (rng.random((k, num_classes)) < 0.5).astype(np.uint8)
    else:
      labels = ((text[:, 1, 0] * image[:, 0, 0] > 0).astype(np.int32)) % num_classes
    splits[name] = store.SplitArrays(
      features={"text": text, "image": image},
      masks={"text": np.arange(text_len)[None] < lens, "image": np.ones((k, image_len), bool)},
      labels=labels,
      ids=[f"{name}{i}" for i in range(k)],
    )
  return store.write_store(
    path, modalities=mods, task=store.TaskSpec(task, num_classes), splits=splits, dtype="float32"
  )


def tiny_fli2moe(input_dims=(4, 4), *, num_classes=2, seed=0, **kwargs):
  """A one-layer FL-I2MoE of width 8 without dropout, for tests that need any small model.

  Extra keyword arguments (e.g. `identical_expert_init`) go to its `ModelConfig`.
  """
  from flax import nnx

  from flmoe_jax.models import FLI2MoE, ModelConfig

  cfg = ModelConfig(
    input_dims=input_dims,
    num_classes=num_classes,
    hidden_dim=8,
    num_heads=2,
    num_layers=1,
    rw_hidden=8,
    dropout=0.0,
    **kwargs,
  )
  return FLI2MoE(cfg, rngs=nnx.Rngs(seed))


def fill_random(model, seed=0):
  """Sets every parameter of an (abstract, `nnx.eval_shape`) model to numpy normal draws.

  Skips compiling a random init: the cheap way to a model with random weights in tests.
  """
  import numpy as np
  from flax import nnx

  state = nnx.state(model)
  rng = np.random.default_rng(seed)
  pure = jax.tree.map(
    lambda s: np.asarray(rng.normal(size=s.shape), s.dtype), nnx.to_pure_dict(state)
  )
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)
  return model


@pytest.fixture(scope="session")
def random_store(tmp_path_factory):
  """A session-wide small random binary store."""
  return make_random_store(tmp_path_factory.mktemp("stores") / "random")


def pytest_terminal_summary(terminalreporter):
  """Prints the counts of the reliability suites (tests/faults/), passed out of run, per file."""
  counts: dict[str, list[int]] = {}
  for outcome in ("passed", "failed", "error"):
    for report in terminalreporter.stats.get(outcome, []):
      nodeid = getattr(report, "nodeid", "")
      if "faults/" not in nodeid or getattr(report, "when", "call") not in ("call", "setup"):
        continue
      if outcome == "passed" and report.when != "call":
        continue
      name = nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix("_test.py")
      c = counts.setdefault(name, [0, 0])
      c[0] += outcome == "passed"
      c[1] += 1
  if counts:
    titles = {
      "kill": "kill -9 and resume",
      "bad_input": "bad-input table",
      "data_loss": "never lose data",
    }
    cells = ", ".join(f"{titles.get(k, k)} {p}/{n} passed" for k, (p, n) in sorted(counts.items()))
    terminalreporter.write_line(f"reliability suites (tests/faults): {cells}")
