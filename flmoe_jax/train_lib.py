"""Training and evaluation of FL-I2MoE (and the dense baseline) on a feature store.

The story of one run, top to bottom:
  1. `train_and_evaluate(config, workdir)` checks the workdir (same config or refuse), opens the store and
     checks it against the config before anything compiles.
  2. For each seed: build the model and optimizer, split them into a pure state, shard it on the mesh,
     resume from the seed's latest checkpoint if there is one.
  3. Epochs: fixed-shape batches -> `train_step` (one compile) -> periodic metrics -> validation ->
     checkpoint (latest every epoch, best by the selection metric).
  4. Test is evaluated once with the best checkpoint; the seed's result is written; finally the summary
     (mean and std over seeds).
Every stage leaves files in the run directory, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import queue
import shutil
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from flmoe_jax import atomic, checkpointing, provenance, sharding
from flmoe_jax import config as config_lib
from flmoe_jax import metrics as metrics_lib
from flmoe_jax.artifact import to_plain
from flmoe_jax.data import store as store_lib
from flmoe_jax.errors import ConfigError, FlmoeError, RunDirError
from flmoe_jax.models.factory import build_model
from flmoe_jax.rundir import RunDir
from flmoe_jax.train_summary import SeedResult, TrainSummary


class TrainingDivergedError(FlmoeError):
  """The loss became NaN/Inf; the message names the step and the last good checkpoint."""


# ----------------------------------------------------------------------------------------------------
# Model, optimizer and state.
# ----------------------------------------------------------------------------------------------------


def training_steps(config: ml_collections.ConfigDict, fs: store_lib.FeatureStore) -> int:
  """Optimizer steps of one seed: full batches per epoch (the remainder is dropped) x epochs."""
  n_train = min(fs.counts["train"], config.train.limit_train or fs.counts["train"])
  return (n_train // config.train.batch_size) * config.train.epochs


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """`optim.schedule`: `constant` (the reference) or `warmup_cosine` (linear warm-up over
  `optim.warmup_fraction` of the steps, then cosine decay to 0)."""
  o = config.optim
  if o.schedule == "constant":
    return optax.constant_schedule(o.learning_rate)
  warmup = int(round(o.warmup_fraction * total_steps))
  return optax.warmup_cosine_decay_schedule(
    0.0, o.learning_rate, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1)
  )


def gate_warmup_steps(config: ml_collections.ConfigDict, total_steps: int) -> int:
  """Steps during which the gate is frozen: `optim.gate_warmup_steps`, or the fraction
  `optim.gate_warmup_fraction` of the run (a fraction keeps its meaning when the data size changes)."""
  return _step_or_share(
    config.optim.gate_warmup_steps, config.optim.gate_warmup_fraction, total_steps
  )


def extra_start_step(config: ml_collections.ConfigDict, total_steps: int) -> int:
  """Step from which the missing-modality and decorrelation terms apply: `loss.extra_start_step`,
  or the fraction `loss.extra_start_fraction` of the run."""
  return _step_or_share(config.loss.extra_start_step, config.loss.extra_start_fraction, total_steps)


def _step_or_share(steps: int, fraction: float, total_steps: int) -> int:
  """A step count when it is set (> 0), else the share `fraction` of the run's steps."""
  return int(steps or round(fraction * total_steps))


def make_optimizer(
  config: ml_collections.ConfigDict, total_steps: int
) -> optax.GradientTransformation:
  """Adam (the reference), with a schedule, weight decay and clipping as opt-in, correctly ordered.

  Args:
    config: the run config (`optim` section).
    total_steps: optimizer steps of the whole run (for the schedule and the gate warm-up fraction).
  """
  o = config.optim
  lr = learning_rate_schedule(config, total_steps)
  if o.weight_decay > 0:
    tx = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
  else:
    tx = optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
  warm = gate_warmup_steps(config, total_steps)
  if warm > 0:
    # Beyond the paper: the reweighting gate stays at its (near-uniform) initialisation for the first
    # steps, so every expert receives task gradient while the roles form; a softmax gate trained from
    # step 0 can starve an expert before it has learnt anything (measured in docs/ground_truth.md).
    frozen = optax.chain(
      tx, optax.scale_by_schedule(lambda count: (count >= warm).astype(jnp.float32))
    )
    tx = optax.multi_transform({"rest": tx, "gate": frozen}, _gate_labels)
  if o.grad_clip_norm > 0:
    # Clipping must act on the gradients *before* the update (the reference clips afterwards: a no-op).
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), tx)
  return tx


def _gate_labels(params):
  """Labels the reweighting model's parameters "gate" and every other parameter "rest"."""

  def label(path, _):
    names = {getattr(k, "key", getattr(k, "name", None)) for k in path}
    return "gate" if "reweight" in names else "rest"

  return jax.tree_util.tree_map_with_path(label, params)


def init_state(config, fs, *, seed: int):
  """Returns (graphdef, state): the pure pytree form of (model, optimizer)."""
  model = build_model(config, fs, seed=seed)
  tx = make_optimizer(config, training_steps(config, fs))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  return nnx.split((model, optimizer))


# ----------------------------------------------------------------------------------------------------
# Pure step functions (statics are keyword-only and bound with functools.partial).
# ----------------------------------------------------------------------------------------------------


def _inputs(batch, dtype):
  # Stores keep float16 on disk; compute in the model's dtype.
  return [x.astype(dtype) for x in batch["x"]], list(batch["mask"])


@dataclasses.dataclass(frozen=True)
class Objective:
  """What one training step minimises: the task and the weights of the loss terms (docs/method.md 2).

  Frozen and hashable: a static argument of the jitted step. Terms beyond the paper are 0 (off, no
  extra forward passes) unless set.

  Attributes:
    task_type: multilabel | multiclass | binary.
    lambda_int: interaction-loss weight (ignored by the dense baseline).
    lambda_role: role-consistency weight.
    lambda_missing: missing-modality task weight.
    lambda_decor: uniqueness-decorrelation weight.
    lambda_red_alone: weight of the redundancy expert's own task loss with one modality absent. It
      applies from the first step: it trains the redundancy expert alone and does not compete with
      the mixture.
    extra_start_step: optimizer step from which lambda_missing and lambda_decor apply (their terms
      are still computed and logged before it, with weight 0).
  """

  task_type: str
  lambda_int: float
  lambda_role: float = 0.0
  lambda_missing: float = 0.0
  lambda_decor: float = 0.0
  lambda_red_alone: float = 0.0
  extra_start_step: int = 0

  @property
  def uses_fill(self) -> bool:
    """Whether a term reads the mean-filled (one modality absent) variants."""
    return self.lambda_role > 0 or self.lambda_missing > 0 or self.lambda_red_alone > 0

  @classmethod
  def of(cls, config: ml_collections.ConfigDict, fs, total_steps: int) -> Objective:
    """The objective of a run config's `loss` section for a store's task."""
    loss = config.loss
    return cls(
      task_type=fs.task.type,
      lambda_int=loss.lambda_int,
      lambda_role=loss.lambda_role,
      lambda_missing=loss.lambda_missing,
      lambda_decor=loss.lambda_decor,
      lambda_red_alone=loss.lambda_red_alone,
      extra_start_step=extra_start_step(config, total_steps),
    )


def train_step(state, batch, key, fill_means=None, *, graphdef, objective: Objective, dtype):
  """One optimisation step.

  Args:
    state: the (model, optimizer) state pytree (donated).
    batch: {"x": tuple [B, T_m, D_m], "mask": tuple bool [B, T_m], "label": ..., "weight": [B]}.
    key: this step's PRNG key (the run key folded with the step).
    fill_means: M raw train-split means [D_m] (the store's `stats/`), needed when the objective
      reads mean-filled variants (`Objective.uses_fill`).
    graphdef: static graph of (model, optimizer).
    objective: the task and loss weights (static).
    dtype: compute dtype.

  Returns:
    (new state, metrics dict of scalars / small arrays, all on device).
  """
  obj = objective
  use_fill = obj.uses_fill
  if use_fill and fill_means is None:
    raise ValueError(
      "lambda_role, lambda_missing or lambda_red_alone > 0 needs fill_means (the store's"
      " train-split means)"
    )
  model, optimizer = nnx.merge(graphdef, state)
  xs, masks = _inputs(batch, dtype)
  # A traced 0/1 switch, not a Python branch: one compiled step serves the whole run.
  extra_on = (optimizer.step[...] >= obj.extra_start_step).astype(jnp.float32)
  dropout_key, noise_key = jax.random.split(key)

  weights = {
    "lambda_int": obj.lambda_int,
    "lambda_role": obj.lambda_role,
    "lambda_missing": obj.lambda_missing * extra_on,
    "lambda_decor": obj.lambda_decor * extra_on,
    "lambda_red_alone": obj.lambda_red_alone,
  }

  def loss_fn(model):
    # Each model kind owns its training objective (the dense baseline: the task loss alone).
    return model.training_loss(
      xs,
      masks,
      batch["label"],
      task_type=obj.task_type,
      weights=weights,
      dropout_key=dropout_key,
      # The noise variants only run when the interaction loss reads them (a static choice).
      noise_key=noise_key if obj.lambda_int else None,
      # The mean-filled variants only run when a term reads them (a static choice).
      fill_means=fill_means if use_fill else None,
    )

  grad_fn = nnx.value_and_grad(lambda m: _pack(loss_fn(m)), has_aux=True)
  (loss, (aux, out)), grads = grad_fn(model)
  optimizer.update(model, grads)
  metrics = {
    "loss": loss,
    "loss_task": aux["task"],
    "loss_interaction": aux["interaction"],
    "loss_int_terms": aux["int_terms"],
    "loss_role": aux["role"],
    "loss_role_terms": aux["role_terms"],
    "loss_missing": aux["missing"],
    "loss_decor": aux["decor"],
    "loss_red_alone": aux["red_alone"],
    "expert_weights": out.weights.astype(jnp.float32).mean(0),
    "grad_norm": optax.tree.norm(grads),
  }
  return nnx.state((model, optimizer)), metrics


def _pack(t):
  loss, aux, out = t
  return loss, (aux, out)


def eval_step(state, batch, *, graphdef, dtype):
  """Deterministic forward: returns (mixture logits [B, C], expert weights [B, E])."""
  model, _ = nnx.merge(graphdef, state)
  xs, masks = _inputs(batch, dtype)
  out = model(xs, masks)
  return out.logits.astype(jnp.float32), out.weights.astype(jnp.float32)


# ----------------------------------------------------------------------------------------------------
# Run directory.
# ----------------------------------------------------------------------------------------------------


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
    if config_lib.config_to_json(saved) != text:
      why = f"a different config ({config_lib.first_difference(saved, config)})"
    elif fs is not None:
      why = _store_difference(paths, fs)
    if why is not None:
      if not overwrite and _has_progress(root):
        raise RunDirError(f"{root} holds a run with {why}; use a new --workdir or pass --overwrite")
      # Either asked for, or a start that failed before any training: nothing of value to keep.
      _remove_run_files(root)
  try:
    root.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise RunDirError(f"cannot create --workdir {root}: {e.strerror or e}") from None
  if not paths.config.exists():
    _atomic_write(paths.config, text)
  if fs is not None:
    _record_session(paths, fs)
  return paths


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
    _atomic_write(paths.run_info, json.dumps(info, indent=1))


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


def _atomic_write(path: pathlib.Path, text: str) -> None:
  # One name for the run's JSON writes (the reliability tests kill a run around it).
  atomic.write_text(path, text)


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


# ----------------------------------------------------------------------------------------------------
# Evaluation over a split.
# ----------------------------------------------------------------------------------------------------


def evaluator(config, graphdef, mesh):
  """`evaluate` of a (model, optimizer) graph with its eval step compiled once.

  Returns:
    fn(state, fs, split) -> {metric: value} (the metrics of `evaluate`).
  """
  dtype = jnp.dtype(config.model.dtype)
  eval_fn = jax.jit(functools.partial(eval_step, graphdef=graphdef, dtype=dtype))
  return functools.partial(evaluate, graphdef=graphdef, config=config, mesh=mesh, eval_fn=eval_fn)


def evaluate(state, fs, split, *, graphdef, config, mesh, eval_fn) -> dict[str, float]:
  """Task metrics of the mixture on one split, plus the mean expert weights."""
  rules = tuple(tuple(r) for r in config.mesh.rules)
  bs = config.train.eval_batch_size
  bs = bs + (-bs) % mesh.shape[dict(rules)["batch"]]
  logits, weights, labels, valid = [], [], [], []
  limit = config.train.limit_eval or None
  for batch in fs.batches(split, bs, limit=limit):
    lg, w = eval_fn(state, sharding.shard_batch(_device_batch(batch), mesh, rules))
    logits.append(lg)
    weights.append(w)
    labels.append(batch["label"])
    valid.append(batch["weight"])
  # One host transfer per split, after all batches were dispatched.
  logits, weights = jax.device_get((logits, weights))
  logits, weights = np.concatenate(logits), np.concatenate(weights)
  labels, valid = np.concatenate(labels), np.concatenate(valid)
  out = metrics_lib.compute_metrics(fs.task.type, logits, labels, valid)
  w = weights[valid > 0].mean(0)
  out.update({f"weight_{i}": float(v) for i, v in enumerate(w)})
  return out


def _device_batch(batch):
  # Only what the jitted steps read (ids and row indices stay on the host).
  return {
    "x": batch["x"],
    "mask": batch["mask"],
    "label": batch["label"],
    "weight": batch["weight"],
  }


# ----------------------------------------------------------------------------------------------------
# The driver.
# ----------------------------------------------------------------------------------------------------


def selection_metric(config, fs) -> str:
  return config.train.selection_metric or metrics_lib.default_selection_metric(fs.task.type)


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


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  *,
  overwrite: bool = False,
  build_store: bool = True,
) -> TrainSummary:
  """Trains every seed of `config.train.seeds` and writes the run directory.

  Every check (config ranges, store, mesh, workdir) runs before anything is written, so a start that
  fails on bad input leaves nothing behind.

  Args:
    config: a run config (see `flmoe_jax.config.base_config`).
    workdir: the run directory; an existing run of the same config resumes.
    overwrite: replace a run of a different config instead of refusing.
    build_store: whether a synthetic config may build its missing store (see `ensure_store`).

  Returns:
    The `TrainSummary` (also written to `workdir/summary.json`).
  """
  config_lib.validate_config(config)
  root = pathlib.Path(workdir)
  if root.exists() and not root.is_dir():
    raise RunDirError(f"--workdir {root} is a file, not a folder; choose another --workdir")
  fs = store_lib.open_store(ensure_store(config, build=build_store))
  check_store_against_config(config, fs)
  rules = tuple(tuple(r) for r in config.mesh.rules)
  mesh = sharding.make_mesh(config.mesh.shape, config.mesh.axes)
  sharding.check_batch_size(config.train.batch_size, mesh, rules)
  init_params = initial_params(config, fs)  # checked before anything is written
  paths = prepare_workdir(config, workdir, overwrite=overwrite, fs=fs)
  writer = metrics_lib.MetricWriter(paths.root)
  try:
    results = {}
    for seed in config.train.seeds:
      try:
        results[int(seed)] = _train_one_seed(
          config, fs, paths, mesh, rules, int(seed), writer, init_params
        )
      except metrics_lib.NonFiniteError as e:
        ckpt = paths.latest_ckpt(int(seed))
        steps = (
          checkpointing.Checkpointer(ckpt, read_only=True).all_steps() if ckpt.exists() else []
        )
        last = (
          f"{ckpt} (step {steps[-1]}, kept intact)" if steps else "none (no epoch had finished)"
        )
        raise TrainingDivergedError(
          f"seed {seed}: the loss became non-finite at step {e.step} ({', '.join(e.names)}); "
          f"last good checkpoint: {last}"
        ) from None
  finally:
    writer.close()
  summary = summarize(results, config=config, fs=fs)
  _atomic_write(paths.summary, summary.to_json())
  return summary


def summarize(results: dict[int, SeedResult], *, config, fs) -> TrainSummary:
  """The run's `TrainSummary`: mean and population std (as the reference) over its seeds."""
  return TrainSummary.of(
    results,
    name=config.name,
    model=config.model.kind,
    store=str(fs.path.resolve()),
    task=fs.task.type,
    selection_metric=selection_metric(config, fs),
  )


def _train_one_seed(
  config, fs, paths: RunDir, mesh, rules, seed: int, writer, init_params=None
) -> SeedResult:
  if paths.result(seed).exists():  # finished earlier: nothing to redo
    return SeedResult.from_dict(json.loads(paths.result(seed).read_text()))
  sel = selection_metric(config, fs)

  # --- State: built on the host, then laid out on the mesh (experts split on the `expert` axis). ---
  graphdef, state = init_state(config, fs, seed=seed)
  if init_params is not None:  # fine-tuning: another run's weights, a fresh optimizer state
    model, optimizer = nnx.merge(graphdef, state)
    nnx.update(model, init_params)
    graphdef, state = nnx.split((model, optimizer))
  shardings = sharding.state_shardings(state, mesh, rules)
  state = jax.device_put(state, shardings)

  total = training_steps(config, fs)
  steps_per_epoch = total // config.train.epochs
  step_fn, select_from = _compiled_steps(config, fs, graphdef, shardings, total)
  evaluate_on = evaluator(config, graphdef, mesh)
  lr_schedule = learning_rate_schedule(config, total)
  lr_at = lambda s: float(lr_schedule(max(s - 1, 0)))  # the rate the step's update used
  latest, best, state, meta = _resume(config, paths, seed, state, writer, steps_per_epoch)

  # The role-consistency and missing-modality losses fill absent modalities with the store's
  # train-split means: put on the device once here, not per step (train_step ignores them when
  # both losses are off).
  fill_means = [jnp.asarray(mu, jnp.float32) for mu in fs.means()]
  base_key = jax.random.key(seed, impl=config.train.prng_impl)
  progress = metrics_lib.Progress(
    total, f"seed {seed}", log_every=config.train.log_every_steps, enabled=config.train.progress
  )
  progress.update(meta["step"])
  step = int(meta["step"])
  window, t_window = [], time.perf_counter()
  try:
    for epoch in range(int(meta["epoch"]), config.train.epochs):
      host_batches = fs.batches(
        "train",
        config.train.batch_size,
        shuffle=True,
        seed=seed,
        epoch=epoch,
        drop_remainder=True,  # fixed shapes and unweighted losses: one compile, no padding rows
        limit=config.train.limit_train or None,
      )
      # A background thread reads and places the next batches while the device runs this step.
      device_batches = prefetch(
        (sharding.shard_batch(_device_batch(b), mesh, rules) for b in host_batches), size=2
      )
      for batch in device_batches:
        key = jax.random.fold_in(base_key, step)
        state, m = step_fn(state, batch, key, fill_means)
        step += 1
        window.append(m)
        if step % config.train.log_every_steps == 0:
          _log_window(writer, window, seed, epoch, step, t_window, config, progress, lr_at)
          window, t_window = [], time.perf_counter()
        else:
          progress.update(1)
      if window:
        _log_window(
          writer, window, seed, epoch, step, t_window, config, progress, lr_at, bump=False
        )
        window, t_window = [], time.perf_counter()

      # --- End of epoch: validate, checkpoint latest (and best when improved, see `_resume`). ---
      val = evaluate_on(state, fs, "val")
      writer.write(step, seed=seed, epoch=epoch + 1, **{f"val/{k}": v for k, v in val.items()})
      improved = step >= select_from and val[sel] > meta["best_metric"]
      if improved:
        meta.update(best_metric=float(val[sel]), best_epoch=epoch + 1, best_val=val, best_step=step)
      meta.update(epoch=epoch + 1, step=step)
      latest.save(step, state, meta)
      latest.wait()  # committed before `best`: see the commit order above
      if improved:
        best.save(step, state, meta)
        best.wait()
  finally:
    progress.close()
    latest.wait()
    best.wait()

  # --- Test once, with the best-validation state. ---
  state = _restore_best(best, latest, state, meta, steps_per_epoch)
  test = evaluate_on(state, fs, "test") if "test" in fs.counts else {}
  writer.write(step, seed=seed, **{f"test/{k}": v for k, v in test.items()})
  latest.close()
  best.close()
  result = SeedResult(
    seed=seed,
    best_epoch=int(meta["best_epoch"]),
    selection_metric=sel,
    best_val={k: float(v) for k, v in meta["best_val"].items()},
    test={k: float(v) for k, v in test.items()},
    steps=int(step),
    num_parameters=count_parameters(graphdef, state),
  )
  _atomic_write(paths.result(seed), json.dumps(to_plain(result), indent=1))
  return result


def _compiled_steps(config, fs, graphdef, shardings, total: int):
  """The jitted train step of a seed, and the first step whose epoch may be selected.

  Returns:
    (step_fn(state, batch, key, fill_means) -> (state, metrics), select_from).
  """
  dtype = jnp.dtype(config.model.dtype)
  objective = Objective.of(config, fs, total)
  extra_from = objective.extra_start_step
  # The best checkpoint is chosen among the epochs that ended at least a whole epoch after the
  # missing-modality and decorrelation terms started: a model selected earlier never had them (an
  # epoch ending at the very step they start had them for zero steps). The last epoch always counts.
  select_from = (
    min(extra_from + total // config.train.epochs, total)
    if (config.loss.lambda_missing or config.loss.lambda_decor)
    else 0
  )
  # Statics bound once; `state` donated so the update happens in place on device.
  step_fn = jax.jit(
    functools.partial(
      train_step,
      graphdef=graphdef,
      objective=objective,
      dtype=dtype,
    ),
    donate_argnums=(0,),
    out_shardings=(shardings, None),
  )
  return step_fn, select_from


def _resume(config, paths: RunDir, seed: int, state, writer, steps_per_epoch: int):
  """Opens a seed's checkpoints and restores its newest committed step, if any.

  Checkpoints: `latest` every epoch, `best` when validation improved. The commit order makes every
  kill recoverable: an epoch's `latest` step is committed (and waited for) before its `best` step,
  and `latest` is the truth on resume. Its metadata names the best step; if `best` lacks it, the
  kill came between the two commits and the best state *is* the restored latest state, so it is
  saved again; `best` steps beyond the restored step (a run of an earlier version, or a fallback
  past a damaged step) are redone by the replay and removed first.

  Returns:
    (latest, best, state, meta): the two checkpointers, the state to continue from and its
    metadata (epoch, step, best metric / epoch / step / validation metrics).
  """
  latest = checkpointing.Checkpointer(
    paths.latest_ckpt(seed), max_to_keep=config.train.keep_checkpoints
  )
  best = checkpointing.Checkpointer(paths.best_ckpt(seed), max_to_keep=1)
  meta = {"epoch": 0, "step": 0, "best_metric": -np.inf, "best_epoch": -1, "best_val": {}}
  had_steps = bool(latest.all_steps())
  resumed = latest.restore_newest(state)
  if resumed is not None:
    # Resume: same config (checked), same data order (seeded per epoch), same per-step keys.
    _, state, meta = resumed
    print(f"seed {seed}: resumed from epoch {meta['epoch']} (step {meta['step']})", flush=True)
  elif had_steps:
    print(f"seed {seed}: no checkpoint restores; training from the start", flush=True)
  _reconcile_best(best, state, meta, steps_per_epoch)
  # Lines written after the restored step are written again by the replay: drop them first.
  writer.rewind(seed=seed, step=int(meta["step"]))
  return latest, best, state, meta


def _best_step(meta, steps_per_epoch: int) -> int | None:
  """The step of the best checkpoint named by a `latest` step's metadata (None before any epoch)."""
  if meta.get("best_epoch", -1) < 1:
    return None
  # Runs of an earlier version did not record the step; their epochs all had steps_per_epoch steps.
  return int(meta.get("best_step", meta["best_epoch"] * steps_per_epoch))


def _reconcile_best(best, state, meta, steps_per_epoch: int) -> None:
  """Makes `best` agree with the restored `latest` step (see the commit order in the driver)."""
  for s in best.all_steps():
    if s > int(meta["step"]):
      best.delete(s)
  want = _best_step(meta, steps_per_epoch)
  if want is None or want in best.all_steps():
    return
  if want != int(meta["step"]):
    raise RunDirError(
      f"{best.directory}: the best checkpoint (step {want}) is missing and the resumed step "
      f"{meta['step']} is not it; remove the seed's folder {best.directory.parent.parent} to retrain it"
    )
  best.save(want, state, meta)
  best.wait()


def _restore_best(best, latest, state, meta, steps_per_epoch: int):
  """The best-validation state; from `latest` when the `best` step is damaged but kept there."""
  want = _best_step(meta, steps_per_epoch)
  got = best.restore_newest(state)
  if got is not None and (want is None or got[0] == want):
    return got[1]
  if want in latest.all_steps():
    print(f"restoring the best state (step {want}) from {latest.directory}", flush=True)
    return latest.restore(want, state)[0]
  raise RunDirError(
    f"{best.directory}: the best checkpoint (step {want}) is damaged or missing; remove the seed's "
    f"folder {best.directory.parent.parent} to retrain it"
  )


def prefetch(iterator, size: int = 2):
  """Runs `iterator` in a background thread, `size` items ahead; re-raises its errors here."""
  q: queue.Queue = queue.Queue(maxsize=size)
  done = object()

  def work():
    try:
      for item in iterator:
        q.put(item)
      q.put(done)
    except BaseException as e:  # noqa: BLE001 - handed to the consumer
      q.put(e)

  threading.Thread(target=work, daemon=True).start()
  while True:
    item = q.get()
    if item is done:
      return
    if isinstance(item, BaseException):
      raise item
    yield item


def count_parameters(graphdef, state) -> int:
  """Number of trainable parameters of the model in a (model, optimizer) state."""
  model, _ = nnx.merge(graphdef, state)
  return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def _log_window(writer, window, seed, epoch, step, t0, config, progress, lr_at, bump=True):
  """Host side of logging: one device_get for the whole window, NaN guard, JSONL line, progress."""
  host = jax.device_get(window)
  dt = time.perf_counter() - t0
  mean = {k: np.mean([h[k] for h in host], axis=0) for k in host[0]}
  for i, h in enumerate(host):
    bad = [k for k in ("loss", "loss_task", "loss_interaction") if not np.isfinite(h[k])]
    if bad:
      raise metrics_lib.NonFiniteError(step - len(host) + i + 1, bad)
  scalars = {
    "train/loss": mean["loss"],
    "train/loss_task": mean["loss_task"],
    "train/loss_interaction": mean["loss_interaction"],
    "train/grad_norm": mean["grad_norm"],
    "train/examples_per_s": len(host) * config.train.batch_size / max(dt, 1e-9),
    "train/learning_rate": lr_at(step),
  }
  for i, v in enumerate(np.atleast_1d(mean["loss_int_terms"])):
    scalars[f"train/loss_int_expert_{i}"] = v
  if config.loss.lambda_missing > 0:
    scalars["train/loss_missing"] = mean["loss_missing"]
  if config.loss.lambda_decor > 0:
    scalars["train/loss_decor"] = mean["loss_decor"]
  if config.loss.lambda_red_alone > 0:
    scalars["train/loss_red_alone"] = mean["loss_red_alone"]
  if config.loss.lambda_role > 0:
    scalars["train/loss_role"] = mean["loss_role"]
    for i, v in enumerate(np.atleast_1d(mean["loss_role_terms"])):
      scalars[f"train/loss_role_expert_{i}"] = v
  for i, v in enumerate(np.atleast_1d(mean["expert_weights"])):
    scalars[f"train/weight_expert_{i}"] = v
  writer.write(step, seed=seed, epoch=epoch + 1, **scalars)
  if bump:
    progress.update(1, loss=float(mean["loss"]))
  else:
    progress.update(0, loss=float(mean["loss"]))


def format_summary(summary: TrainSummary) -> str:
  """A short human-readable table of a run summary."""
  lines = [f"{summary.name} ({summary.model}, {summary.task}), seeds {list(summary.seeds)}:"]
  for part in ("best_val", "test"):
    ms = summary.mean_std.get(part, {})
    keys = [k for k in ("accuracy", "macro_f1", "micro_f1", "auroc", "exact_match") if k in ms]
    cells = ", ".join(f"{k} {100 * ms[k].mean:.2f} +/- {100 * ms[k].std:.2f}" for k in keys)
    lines.append(f"  {part:8s} {cells}")
  return "\n".join(lines)
