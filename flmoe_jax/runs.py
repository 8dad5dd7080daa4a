"""Reading finished runs back: the model of a seed's best (or latest) checkpoint, its config and store.

Explanations, probes and reports start here. Nothing in this module writes into the run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib

from flax import nnx

from flmoe_jax import checkpointing, choices
from flmoe_jax import config as config_lib
from flmoe_jax.data import store as store_lib
from flmoe_jax.errors import ConfigError, RunDirError
from flmoe_jax.rundir import RunDir
from flmoe_jax.train_summary import TrainSummary


@dataclasses.dataclass
class LoadedRun:
  """A trained model with everything needed to evaluate it.

  Attributes:
    model: the FLI2MoE or DenseTransformer (eval use: pass no dropout key).
    config: the run's config.
    store: the feature store it was trained on.
    seed: the seed.
    workdir: the run directory.
    meta: checkpoint metadata (epoch, step, best metric, ...).
  """

  model: nnx.Module
  config: object
  store: store_lib.FeatureStore
  seed: int
  workdir: pathlib.Path
  meta: dict

  @property
  def kinds(self) -> tuple[str, ...]:
    """Modality kinds (`tokens` / `patches`) in input order."""
    return tuple(m.kind for m in self.store.modalities)


def run_config(workdir: str | os.PathLike):
  """The config a run was trained with (`workdir/config.json`)."""
  root = pathlib.Path(workdir)
  if not root.exists():
    raise RunDirError(f"{workdir} is not a run directory (it does not exist)")
  if not root.is_dir():
    raise RunDirError(f"{workdir} is not a run directory (it is a file)")
  p = RunDir(root).config
  if not p.is_file():
    raise RunDirError(f"{workdir} is not a run directory (no config.json)")
  return config_lib.with_defaults(config_lib.config_from_json(p.read_text()))


def run_store(workdir: str | os.PathLike, config=None) -> store_lib.FeatureStore:
  """Opens the feature store a run was trained on, without loading any model.

  Args:
    workdir: the run directory.
    config: its config (default: read from `workdir/config.json`).

  Raises:
    RunDirError: `workdir` is not a run directory.
    StoreError: the store is gone or broken.
  """
  root = pathlib.Path(workdir)
  config = run_config(root) if config is None else config
  store_path = config_lib.resolve_path(config.store)
  if not store_path.is_dir() and RunDir(root).summary.is_file():
    # Relative store paths are relative to where training ran; the summary keeps the absolute one.
    store_path = pathlib.Path(load_summary(root).store)
  return store_lib.open_store(store_path)


def finished_seeds(workdir: str | os.PathLike) -> list[int]:
  """Seeds whose training finished (their result.json exists), sorted."""
  return RunDir(workdir).finished_seeds()


def require_token_level(run: LoadedRun, what: str) -> None:
  """Refuses a run whose experts never see the token sequences (the original I2MoE).

  Raises:
    RunDirError: `run` pools each modality into one vector (`model.kind = 'i2moe'`).
  """
  if run.config.model.kind == "i2moe":
    raise RunDirError(
      f"{run.workdir}: an i2moe run pools each modality into one vector; {what} need the token "
      "sequences of an fl_i2moe or dense run"
    )


def load_run(
  workdir: str | os.PathLike,
  *,
  seed: int | None = None,
  which: str = "best",
  attention: str | None = None,
) -> LoadedRun:
  """Restores a seed's model from a run directory.

  Args:
    workdir: a directory written by `train_and_evaluate`.
    seed: which seed (default: the first finished one).
    which: `best` (by the validation selection metric) or `latest`.
    attention: the experts' attention implementation to run the loaded model with (`einsum`,
      `xla`, `cudnn`; see `models.experts.Expert`); None = the run's `model.attention`. It changes
      how attention is computed, not the weights.

  Returns:
    The loaded run.

  Raises:
    RunDirError: no such run, seed or finished checkpoint.
  """
  from flmoe_jax import train  # the state builder lives with the training code

  root = pathlib.Path(workdir)
  config = run_config(root)
  if attention is not None:
    if attention not in choices.ATTENTION_IMPLEMENTATIONS:
      raise ConfigError(f"attention {attention!r} not in {choices.ATTENTION_IMPLEMENTATIONS}")
    config.model.attention = attention
  done = finished_seeds(root)
  if seed is None:
    if not done:
      raise RunDirError(f"{root} holds no finished seed (no seed_*/result.json); train it first")
    seed = done[0]
  ckdir = RunDir(root).checkpoint(seed, which)
  if which == "best" and seed not in done:
    raise RunDirError(
      f"{root}: seed {seed} has not finished training (no seed_{seed}/result.json; finished seeds: "
      f"{done})"
    )
  if not ckdir.is_dir():
    raise RunDirError(f"{ckdir}: no checkpoint")
  fs = run_store(root, config)
  graphdef, target = train.init_state(config, fs, seed=seed)
  with _orbax_read_only_notes_hidden():
    restored = checkpointing.read_latest(ckdir, target)
  if restored is None:
    raise RunDirError(f"{ckdir}: no finished checkpoint")
  state, meta = restored
  model, _ = nnx.merge(graphdef, state)
  return LoadedRun(model=model, config=config, store=fs, seed=seed, workdir=root, meta=meta)


@contextlib.contextmanager
def _orbax_read_only_notes_hidden():
  """Hides the warnings orbax logs when a checkpoint folder is opened read-only.

  They only say that the read-only mode turned off saving options; outside a configured logging
  set-up Python prints them on stderr, above the output (or the one-line error) of `flmoe probe`.
  """
  logger = logging.getLogger("absl")  # orbax logs through absl
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def load_summary(workdir: str | os.PathLike) -> TrainSummary:
  """The run's `TrainSummary` (summary.json)."""
  run = RunDir(workdir)
  if not run.summary.is_file():
    raise RunDirError(f"{workdir}: no summary.json (training has not finished)")
  return run.load_summary()
