"""The run directory of a training run: create it or check that it holds this run, and the inputs checked
before anything compiles (the store against the config, `train.init_from`, the synthetic store).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from typing import Any

import jax
from flax import nnx

from flmoe_jax import atomic, checkpointing, distributed, provenance
from flmoe_jax import config as config_lib
from flmoe_jax.data import store as store_lib
from flmoe_jax.errors import ConfigError, RunDirError
from flmoe_jax.models.factory import build_model
from flmoe_jax.rundir import RunDir
from flmoe_jax.train.step import init_state


def prepare_workdir(
  config, workdir, *, overwrite: bool = False, fs: store_lib.FeatureStore | None = None
) -> RunDir:
  """Creates the run dir, or checks that an existing one holds a run of the same config and store.

  Nothing the user put in the folder is touched: a non-empty folder that holds no run is refused,
  and `overwrite` removes only what training wrote (`RunDir.TRAINING_FILES`, `seed_<n>/`, and the
  stage folders `RunDir.STAGE_FOLDERS`).

  Args:
    config: the run config.
    workdir: the run directory.
    overwrite: replace a run of a different config (or store) instead of refusing.
    fs: the store the run trains on; its signature is recorded in `run.json` and a resumed run's
      store must match it.

  Returns:
    The run's paths.

  Raises:
    RunDirError: the workdir is a file, cannot be created, holds other files, or holds another run.
  """
  paths = RunDir(pathlib.Path(workdir))
  root = paths.root
  if root.exists() and not root.is_dir():
    raise RunDirError(f"--workdir {root} is a file, not a folder; choose another --workdir")
  text = config_lib.config_to_json(config)
  if root.is_dir() and not paths.config.is_file() and any(root.iterdir()):
    raise RunDirError(
      f"--workdir {root} is a non-empty folder that holds no run (no config.json); choose a new "
      "or empty folder"
    )
  if paths.config.is_file():
    # Compared with the keys added since the run was written at their defaults, so that a run started
    # by an earlier version resumes (what it was trained with is the default of a key it lacks).
    try:
      saved = config_lib.with_defaults(config_lib.config_from_json(paths.config.read_text()))
    except ValueError as e:
      raise RunDirError(f"{paths.config} is not a readable run config ({e})") from None
    why = None
    if _without_seeds(saved) != _without_seeds(config):
      why = f"a different config ({config_lib.first_difference(saved, config)})"
    elif config_lib.config_to_json(saved) != text:
      # Only the seeds (whether they train side by side, how many processes) differ: each trains
      # in its own seed_<n>/ with the same settings, so a run grows (or is summarised over fewer)
      # seeds; the config records this start's (process 0's: the others only check).
      if distributed.is_primary():
        atomic.write_text(paths.config, text)
    elif fs is not None:
      why = _store_difference(paths, fs)
    if why is not None:
      if not overwrite and _has_progress(root):
        raise RunDirError(f"{root} holds a run with {why}; use a new --workdir or pass --overwrite")
      # Either asked for, or a start that failed before any training: nothing of value to keep.
      if distributed.is_primary():
        _remove_run_files(root)
  try:
    root.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise RunDirError(f"cannot create --workdir {root}: {e.strerror or e}") from None
  if not paths.config.exists() and distributed.is_primary():
    atomic.write_text(paths.config, text)
  if fs is not None:
    _record_session(paths, fs)
  return paths


def _without_seeds(config) -> str:
  """The config's JSON without `train.seeds`, `train.vmap_seeds` and `distributed` (which seeds,
  whether they train side by side, on how many processes: none changes a seed's numbers): what
  every start of one run must share."""
  d = json.loads(config_lib.config_to_json(config))
  d.get("train", {}).pop("seeds", None)
  d.get("train", {}).pop("vmap_seeds", None)
  d.pop("distributed", None)
  return json.dumps(d, sort_keys=True)


def store_signature(fs: store_lib.FeatureStore) -> dict[str, Any]:
  """What a run depends on in its store: modalities, task and split sizes."""
  return {
    "modalities": [dataclasses.asdict(m) for m in fs.modalities],
    "task": {"type": fs.task.type, "num_classes": fs.task.num_classes},
    "splits": dict(fs.counts),
  }


def _store_difference(paths: RunDir, fs) -> str | None:
  if not paths.run_info.is_file():
    return None  # a run of an earlier version: its checkpoints' shapes are checked on restore
  try:
    recorded = json.loads(paths.run_info.read_text())["store"]["signature"]
  except (ValueError, KeyError, TypeError):
    return None
  now = json.loads(json.dumps(store_signature(fs)))
  for key in ("modalities", "task", "splits"):
    if recorded.get(key) != now[key]:
      return f"another store ({key} {recorded.get(key)} there, {now[key]} in {fs.path})"
  return None


def _record_session(paths: RunDir, fs) -> None:
  """Adds this start (versions, git commit, backend) to `run.json`, with the store's signature."""
  info = {"format": "flmoe-run", "version": 1, "sessions": []}
  if paths.run_info.is_file():
    try:
      info = json.loads(paths.run_info.read_text())
    except ValueError:
      pass  # a run.json cut short cannot be: it is written atomically
  info["store"] = {"path": str(fs.path.resolve()), "signature": store_signature(fs)}
  if jax.process_index() == 0:
    info.setdefault("sessions", []).append(provenance.session())
    atomic.write_text(paths.run_info, json.dumps(info, indent=1))


def _has_progress(root: pathlib.Path) -> bool:
  """Whether any seed of the run finished an epoch (a committed checkpoint step) or training."""
  for seed_dir in root.glob("seed_*"):
    if (seed_dir / "result.json").is_file():
      return True
    latest = seed_dir / "checkpoints" / "latest"
    if latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir()):
      return True
  return False


def _remove_run_files(root: pathlib.Path) -> None:
  for name in RunDir.TRAINING_FILES:
    (root / name).unlink(missing_ok=True)
  for p in root.iterdir():
    seed_dir = p.name.startswith("seed_") and p.name[5:].isdigit()
    if p.is_dir() and (seed_dir or p.name in RunDir.STAGE_FOLDERS):
      shutil.rmtree(p)


def initial_params(config, fs: store_lib.FeatureStore) -> nnx.State | None:
  """The parameters `train.init_from` names: its first finished seed's best checkpoint, or None.

  Raises:
    ConfigError: not a finished run, or its model's parameters differ from this config's (shapes).
  """
  if not config.train.init_from:
    return None
  src = RunDir(config.train.init_from)
  where = f"train.init_from {src.root}"
  if not src.config.is_file():
    raise ConfigError(f"{where}: not a run directory (no config.json)")
  seeds = src.finished_seeds()
  if not seeds:
    raise ConfigError(f"{where}: no finished seed (no seed_*/result.json)")
  src_config = config_lib.with_defaults(config_lib.config_from_json(src.config.read_text()))
  graphdef, target = init_state(src_config, fs, seed=seeds[0])
  restored = checkpointing.read_latest(src.best_ckpt(seeds[0]), target)
  if restored is None:
    raise ConfigError(f"{where}: seed {seeds[0]} has no best checkpoint")
  params = nnx.state(nnx.merge(graphdef, restored[0])[0], nnx.Param)
  want = nnx.state(nnx.eval_shape(lambda: build_model(config, fs, seed=0)), nnx.Param)
  shapes = [jax.tree.map(lambda a: tuple(a.shape), nnx.to_pure_dict(s)) for s in (params, want)]
  if shapes[0] != shapes[1]:
    raise ConfigError(
      f"{where}: its model ({src_config.model.kind}, hidden_dim {src_config.model.hidden_dim}, "
      f"{src_config.model.num_layers} layer(s)) does not have this config's parameter shapes "
      f"({config.model.kind}, hidden_dim {config.model.hidden_dim}, {config.model.num_layers} "
      "layer(s)); set the model keys to the run's"
    )
  return params


def check_store_against_config(config, fs: store_lib.FeatureStore) -> None:
  """Everything that would otherwise fail inside a compile, as one clear message."""
  for split in ("train", "val"):
    if split not in fs.counts:
      raise ConfigError(f"store {fs.path} has no {split!r} split (needed for training)")
  for split, n in fs.counts.items():
    if n == 0:
      raise ConfigError(
        f"store {fs.path}: the {split!r} split is empty; every split needs at least one example"
      )
  if config.train.batch_size > fs.counts["train"] and not config.train.limit_train:
    raise ConfigError(
      f"train.batch_size {config.train.batch_size} exceeds the {fs.counts['train']} training examples"
    )
  if config.model.kind in ("fl_i2moe", "i2moe") and len(fs.modalities) < 2:
    raise ConfigError(f"{config.model.kind} needs at least two modalities")


def ensure_store(config, *, base=None, build: bool = True) -> pathlib.Path:
  """The store path of a config; builds the synthetic store first when the config asks for one.

  Args:
    config: the run config.
    base: folder that a relative `config.store` is relative to (default: the working directory).
    build: whether a synthetic config may build its store when the path is missing; False when the
      user named the path (a mistyped path must fail, not become a new store).

  Returns:
    The store folder.

  Raises:
    StoreError: no store at the path (and none to build), or the path is not a store.
    ConfigError: the path holds a synthetic store made with other settings.
  """
  if not config.store:
    raise ConfigError(
      "config.store is empty: point it at a feature store (see docs/feature_store.md)"
    )
  path = config_lib.resolve_path(config.store, base)
  if not config.synthetic:
    return path
  if not build and not (path / "manifest.json").exists():
    raise store_lib.StoreError(
      f"no feature store at {path} (config.store given on the command line); write one with "
      f"`flmoe synth --out {path}` or `flmoe features`, or leave config.store at the config's own "
      "synthetic store, which is built when missing"
    )
  from flmoe_jax.data import synthetic  # numpy only; imported lazily to keep `import` light

  try:
    want = dataclasses.asdict(synthetic.PlantedConfig(**config.synthetic.to_dict()))
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.synthetic: {e}") from None
  if (path / "manifest.json").exists():
    # Never train silently on a store generated with other settings.
    gt = store_lib.open_store(path).ground_truth() or {}
    have = gt.get("config", {})
    diff = sorted(k for k in want if k in have and have[k] != want[k])
    if diff:
      k = diff[0]
      raise ConfigError(
        f"{path} was generated with other synthetic settings ({k}: {have[k]!r} there, {want[k]!r} in "
        f"the config); delete it or point config.store elsewhere"
      )
    return path
  print(f"building the synthetic planted-interaction store at {path}", flush=True)
  synthetic.write_synthetic_store(synthetic.PlantedConfig(**want), path)
  return path
