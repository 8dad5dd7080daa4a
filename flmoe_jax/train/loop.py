"""The training loop: every seed of a run, evaluation, checkpoints, resumption and the summary.

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

import collections
import contextlib
import dataclasses
import functools
import json
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from flmoe_jax import atomic, checkpointing, choices, distributed, sharding
from flmoe_jax import config as config_lib
from flmoe_jax import metrics as metrics_lib
from flmoe_jax.artifact import to_plain
from flmoe_jax.data import store as store_lib
from flmoe_jax.errors import FlmoeError, RunDirError
from flmoe_jax.handoff import prefetch
from flmoe_jax.rundir import RunDir
from flmoe_jax.train.step import (
  Objective,
  eval_step,
  init_state,
  learning_rate_schedule,
  train_step,
  training_steps,
)
from flmoe_jax.train.workdir import (
  check_store_against_config,
  ensure_store,
  initial_params,
  prepare_workdir,
)
from flmoe_jax.train_summary import SeedResult, TrainSummary


class TrainingDivergedError(FlmoeError):
  """The loss became NaN/Inf; the message names the step and the last good checkpoint."""


def evaluator(config, graphdef, mesh):
  """`evaluate` of a (model, optimizer) graph with its eval step compiled once.

  Returns:
    fn(state, fs, split) -> {metric: value} (the metrics of `evaluate`).
  """
  eval_fn = _jitted_eval(graphdef, jnp.dtype(config.model.dtype), mesh)
  return functools.partial(evaluate, graphdef=graphdef, config=config, mesh=mesh, eval_fn=eval_fn)


@functools.lru_cache(maxsize=8)
def _jitted_eval(graphdef, dtype, mesh):
  """The jitted eval step of a graph (cached as `_jitted_train_step`): fn(state, batch) -> (logits,
  expert weights, labels, example weights)."""

  def step(state, batch):
    logits, weights = eval_step(state, batch, graphdef=graphdef, dtype=dtype)
    return logits, weights, batch["label"], batch["weight"]

  # Every output whole on every device: each process reads its rows of a batch, and every process
  # computes the metrics of all of them.
  return jax.jit(step, out_shardings=sharding.replicated(mesh))


def evaluate(state, fs, split, *, graphdef, config, mesh, eval_fn) -> dict[str, float]:
  """Task metrics of the mixture on one split, plus the mean expert weights."""
  rules = tuple(tuple(r) for r in config.mesh.rules)
  bs = config.train.eval_batch_size
  bs = bs + (-bs) % mesh.shape[dict(rules)["batch"]]
  rows = sharding.local_rows(bs, mesh, rules)
  outs = [
    eval_fn(state, sharding.global_batch(_device_batch(batch), mesh, bs, rules))
    for batch in fs.batches(split, bs, limit=config.train.limit_eval or None, rows=rows)
  ]
  # One host transfer per split, after all batches were dispatched.
  logits, weights, labels, valid = (np.concatenate(x) for x in zip(*jax.device_get(outs)))
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


def selection_metric(config, fs) -> str:
  return config.train.selection_metric or metrics_lib.default_selection_metric(fs.task.type)


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
  # Several processes (config.distributed, or a launcher JAX detects): connected before any JAX
  # computation; from here on the mesh spans every process's devices.
  distributed.initialize(config)
  distributed.check_same_config(config, workdir)
  root = pathlib.Path(workdir)
  if root.exists() and not root.is_dir():
    raise RunDirError(f"--workdir {root} is a file, not a folder; choose another --workdir")
  # Process 0 builds a missing synthetic store; the others then find it.
  store_path = distributed.primary_first(lambda: ensure_store(config, build=build_store))
  fs = store_lib.open_store(store_path)
  check_store_against_config(config, fs)
  rules = tuple(tuple(r) for r in config.mesh.rules)
  mesh = sharding.make_mesh(config.mesh.shape, config.mesh.axes)
  sharding.check_batch_size(config.train.batch_size, mesh, rules)
  if config.model.kind != "dense":  # one expert per modality, a synergy and a redundancy expert
    sharding.check_expert_axis(len(fs.modality_names) + 2, mesh, rules)
  init_params = initial_params(config, fs)  # checked before anything is written
  paths = distributed.primary_first(
    lambda: prepare_workdir(config, workdir, overwrite=overwrite, fs=fs)
  )
  writer = metrics_lib.MetricWriter(paths.root)
  try:
    results = {}
    if config.train.vmap_seeds:
      seeds = [int(s) for s in config.train.seeds]
      results = _train_seeds_vmapped(config, fs, paths, mesh, rules, seeds, writer, init_params)
    for seed in config.train.seeds:
      if int(seed) in results:
        continue
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
  results = {int(s): results[int(s)] for s in config.train.seeds}  # in the config's order
  summary = summarize(results, config=config, fs=fs)
  if distributed.is_primary():
    atomic.write_text(paths.summary, summary.to_json())
  distributed.barrier("flmoe-run-written")  # every process returns once the run's files are on disk
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
  graphdef, state = _initial_state(config, fs, seed, init_params)
  shardings = sharding.state_shardings(state, mesh, rules)
  state = jax.device_put(state, shardings)

  total = training_steps(config, fs)
  steps_per_epoch = total // config.train.epochs
  step_fn, select_from = _compiled_steps(config, fs, graphdef, total, shardings, mesh)
  evaluate_on = evaluator(config, graphdef, mesh)
  end_epoch = _EpochEnd(fs, writer, evaluate_on, sel, select_from)
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
  batch_size = config.train.batch_size
  rows = sharding.local_rows(batch_size, mesh, rules)  # this process's share of each batch
  try:
    for epoch in range(int(meta["epoch"]), config.train.epochs):
      host_batches = _train_batches(config, fs, seed, epoch, rows)
      # A background thread reads and places the next batches while the device runs this step.
      # `closing`: an error in the loop (a NaN, Ctrl-C) stops that thread at once.
      device_batches = prefetch(
        (sharding.global_batch(_device_batch(b), mesh, batch_size, rules) for b in host_batches),
        size=2,
      )
      with contextlib.closing(device_batches):
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
      end_epoch(seed, epoch, step, state, meta, latest, best)
  finally:
    progress.close()
    latest.wait()
    best.wait()

  finish = _Finisher(paths, fs, writer, graphdef, evaluate_on, steps_per_epoch, sel)
  return finish(seed, state, meta, latest, best)


def _train_batches(config, fs, seed: int, epoch: int, rows: tuple[int, int]):
  """A seed's shuffled training batches of one epoch: this process's `rows` of each."""
  return fs.batches(
    "train",
    config.train.batch_size,
    shuffle=True,
    seed=seed,
    epoch=epoch,
    drop_remainder=True,  # fixed shapes and unweighted losses: one compile, no padding rows
    limit=config.train.limit_train or None,
    rows=rows,
  )


def _initial_state(config, fs, seed: int, init_params=None):
  """(graphdef, state) of a seed's fresh model and optimizer (another run's weights if given)."""
  graphdef, state = init_state(config, fs, seed=seed)
  if init_params is not None:  # fine-tuning: another run's weights, a fresh optimizer state
    model, optimizer = nnx.merge(graphdef, state)
    nnx.update(model, init_params)
    graphdef, state = nnx.split((model, optimizer))
  return graphdef, state


def _open_seeds_in_step(config, fs, paths: RunDir, seeds, writer, init_params, steps_per_epoch):
  """The largest group of unfinished seeds at one committed step, each with its state and opened
  checkpointers: the seeds that have not started, or those a killed side-by-side run left at the
  same epoch.

  Returns:
    (graphdef, {seed: (latest, best, state, meta)}): finished seeds and seeds at another step are
    left out (the sequential loop's); empty, every checkpointer closed, when fewer than two remain.
  """
  at = {s: _committed_step(paths, s) for s in seeds if not paths.result(s).exists()}
  groups = collections.defaultdict(list)
  for seed, step in at.items():
    groups[step].append(seed)
  # The most seeds; of equal groups, the earliest step (the most training shared).
  step, group = max(groups.items(), key=lambda g: (len(g[1]), -g[0]), default=(0, []))
  graphdef, opened = None, {}
  if len(group) < 2:
    return graphdef, opened
  for seed in group:
    graphdef, state = _initial_state(config, fs, seed, init_params)
    # Restores the seed's step (a fresh seed: opens its checkpointers and drops the metrics lines
    # of an earlier start that never checkpointed; the replay writes them again).
    opened[seed] = _resume(config, paths, seed, state, writer, steps_per_epoch)
  # A damaged newest step falls back to an older one: that seed leaves the group.
  kept = {s: o for s, o in opened.items() if int(o[3]["step"]) == step}
  kept = kept if len(kept) >= 2 else {}
  for seed, (latest, best, _, _) in opened.items():
    if seed not in kept:
      latest.close()
      best.close()
  return graphdef, kept


def _stacked_batches(config, fs, mesh, rules, seeds, epoch: int):
  """Per step, every seed's own batch of this epoch stacked on a leading seed axis, laid out on the
  mesh (the seed axis replicated, the batch axis as one seed's)."""
  batch_size = config.train.batch_size
  rows = sharding.local_rows(batch_size, mesh, rules)
  its = [_train_batches(config, fs, seed, epoch, rows) for seed in seeds]
  for group in zip(*its, strict=True):
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *(_device_batch(b) for b in group))
    yield sharding.global_batch(stacked, mesh, batch_size, rules, lead=1)


def _seed_slice(tree, i: int):
  """Seed i's slice of a tree with a leading seed axis."""
  return jax.tree.map(lambda x: x[i], tree)


def _train_seeds_vmapped(
  config, fs, paths: RunDir, mesh, rules, seeds, writer, init_params=None
) -> dict[int, SeedResult]:
  """Trains the seeds that are at one step in one compiled program over a seed axis.

  Why: where a small model's step is mostly launch and host time (an accelerator), S seeds side by
  side cost little more than one (on a CPU core, compute-bound, they cost S: docs/scaling.md). Each
  seed keeps what it has in the sequential loop: its initialisation, its data order (its own
  shuffled batches), its per-step keys, its metrics lines, its checkpoints (`latest` every epoch,
  `best` by the selection metric), its best epoch and its test, so it ends with the numbers of its
  separate run. The seeds at one committed step train here: those that have not started, or, after
  a kill, those the killed program left at the same epoch (each resumes from its own checkpoint);
  a seed at another step, or finished, is left to the sequential loop.

  Returns:
    {seed: result} of the seeds trained here (none when fewer than two were at one step).
  """
  steps_total = training_steps(config, fs)
  steps_per_epoch = steps_total // config.train.epochs
  graphdef, opened = _open_seeds_in_step(
    config, fs, paths, seeds, writer, init_params, steps_per_epoch
  )
  if not opened:
    return {}
  together = list(opened)
  start = opened[together[0]][3]  # every seed's meta names the same epoch and step
  print(
    f"seeds {together}: trained side by side (train.vmap_seeds)"
    + (f" from epoch {start['epoch']}" if start["step"] else ""),
    flush=True,
  )

  # --- One state with a leading seed axis, replicated over it, each slice laid out as one seed's. ---
  single = sharding.state_shardings(opened[together[0]][2], mesh, rules)
  stacked_sh = jax.tree.map(sharding.with_leading_axes, single)
  state = jax.device_put(
    jax.tree.map(lambda *xs: jnp.stack(xs), *(opened[s][2] for s in together)), stacked_sh
  )
  vstep, select_from = _compiled_steps(
    config, fs, graphdef, steps_total, stacked_sh, mesh, seed_axis=True
  )
  evaluate_on = evaluator(config, graphdef, mesh)
  sel = selection_metric(config, fs)
  end_epoch = _EpochEnd(fs, writer, evaluate_on, sel, select_from)
  lr_schedule = learning_rate_schedule(config, steps_total)
  lr_at = lambda s: float(lr_schedule(max(s - 1, 0)))  # noqa: E731
  fill_means = [jnp.asarray(mu, jnp.float32) for mu in fs.means()]
  base_keys = jnp.stack([jax.random.key(s, impl=config.train.prng_impl) for s in together])
  keys_at = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))
  progress = metrics_lib.Progress(
    steps_total, f"seeds {','.join(map(str, together))}", log_every=config.train.log_every_steps,
    enabled=config.train.progress,
  )  # fmt: skip
  progress.update(int(start["step"]))
  step, window, t_window = int(start["step"]), [], time.perf_counter()

  def log(epoch, bump=True):
    host = jax.device_get(window)  # one transfer for every seed's window
    for i, seed in enumerate(together):
      mine = [_seed_slice(h, i) for h in host]
      try:
        _log_window(writer, mine, seed, epoch, step, t_window, config, progress, lr_at, bump=False)
      except metrics_lib.NonFiniteError as e:
        raise TrainingDivergedError(
          f"seed {seed}: the loss became non-finite at step {e.step} ({', '.join(e.names)}); "
          "the seeds trained side by side stop here; their checkpoints are kept"
        ) from None
    progress.update(1 if bump else 0)

  try:
    for epoch in range(int(start["epoch"]), config.train.epochs):
      batches = _stacked_batches(config, fs, mesh, rules, together, epoch)
      with contextlib.closing(prefetch(batches, size=2)) as stacked:
        for batch in stacked:
          state, m = vstep(state, batch, keys_at(base_keys, step), fill_means)
          step += 1
          window.append(m)
          if step % config.train.log_every_steps == 0:
            log(epoch)
            window, t_window = [], time.perf_counter()
          else:
            progress.update(1)
      if window:
        log(epoch, bump=False)
        window, t_window = [], time.perf_counter()
      # --- End of epoch, per seed: validate, checkpoint latest (and best when improved). ---
      for i, seed in enumerate(together):
        latest, best, _, meta = opened[seed]
        end_epoch(seed, epoch, step, _seed_slice(state, i), meta, latest, best)
  finally:
    progress.close()
    for latest, best, _, _ in opened.values():
      latest.wait()
      best.wait()

  # --- Test each seed once, with its best-validation state. ---
  finish = _Finisher(paths, fs, writer, graphdef, evaluate_on, steps_per_epoch, sel)
  return {
    seed: finish(seed, _seed_slice(state, i), opened[seed][3], *opened[seed][:2])
    for i, seed in enumerate(together)
  }


@dataclasses.dataclass(frozen=True)
class _EpochEnd:
  """A seed's end of epoch: validate, then checkpoint `latest` and, when the selection metric
  improved (from `select_from` on), `best`, in that commit order (see `_resume`). Updates `meta`."""

  fs: store_lib.FeatureStore
  writer: metrics_lib.MetricWriter
  evaluate_on: object  # `evaluator(...)`
  selection_metric: str
  select_from: int

  def __call__(self, seed: int, epoch: int, step: int, state, meta: dict, latest, best) -> None:
    val = self.evaluate_on(state, self.fs, "val")
    self.writer.write(step, seed=seed, epoch=epoch + 1, **{f"val/{k}": v for k, v in val.items()})
    sel = self.selection_metric
    improved = step >= self.select_from and val[sel] > meta["best_metric"]
    if improved:
      meta.update(best_metric=float(val[sel]), best_epoch=epoch + 1, best_val=val, best_step=step)
    meta.update(epoch=epoch + 1, step=step)
    latest.save(step, state, meta)
    latest.wait()  # committed before `best`
    if improved:
      best.save(step, state, meta)
      best.wait()


def _committed_step(paths: RunDir, seed: int) -> int:
  """A seed's newest committed `latest` step (0 when it has none: it starts rather than resumes)."""
  ckpt = paths.latest_ckpt(seed)
  if not ckpt.exists():
    return 0
  ck = checkpointing.Checkpointer(ckpt, read_only=True)
  try:
    return max(ck.all_steps(), default=0)
  finally:
    ck.close()


@dataclasses.dataclass(frozen=True)
class _Finisher:
  """Tests a trained seed once with its best-validation state and writes its `result.json`."""

  paths: RunDir
  fs: store_lib.FeatureStore
  writer: metrics_lib.MetricWriter
  graphdef: object
  evaluate_on: object  # `evaluator(...)`
  steps_per_epoch: int
  selection_metric: str

  def __call__(self, seed: int, state, meta: dict, latest, best) -> SeedResult:
    state = _restore_best(best, latest, state, meta, self.steps_per_epoch)
    test = self.evaluate_on(state, self.fs, "test") if "test" in self.fs.counts else {}
    self.writer.write(int(meta["step"]), seed=seed, **{f"test/{k}": v for k, v in test.items()})
    latest.close()
    best.close()
    result = SeedResult(
      seed=seed,
      best_epoch=int(meta["best_epoch"]),
      selection_metric=self.selection_metric,
      best_val={k: float(v) for k, v in meta["best_val"].items()},
      test={k: float(v) for k, v in test.items()},
      steps=int(meta["step"]),
      num_parameters=count_parameters(self.graphdef, state),
    )
    if distributed.is_primary():
      atomic.write_text(self.paths.result(seed), json.dumps(to_plain(result), indent=1))
    return result


def _compiled_steps(config, fs, graphdef, total: int, shardings, mesh, *, seed_axis: bool = False):
  """The compiled train step of a run, and the first step whose epoch may be selected.

  Args:
    config: the run config.
    fs: the feature store.
    graphdef: the static graph of (model, optimizer).
    total: optimizer steps of the run.
    shardings: the state's layout on `mesh` (with the leading seed axis when `seed_axis`).
    mesh: the device mesh.
    seed_axis: whether state, batch and key carry a leading seed axis (`train.vmap_seeds`).

  Returns:
    (step_fn(state, batch, key, fill_means) -> (state, metrics), select_from). `step_fn` passes
    the run's `Objective` as an argument, not a constant: runs that differ only in loss weights or
    their start step share one compiled program.
  """
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
  leaves, treedef = jax.tree.flatten(shardings)
  compiled = _jitted_train_step(
    graphdef, jnp.dtype(config.model.dtype), (treedef, tuple(leaves)), mesh, seed_axis
  )

  def step_fn(state, batch, key, fill_means):
    return compiled(state, batch, key, objective, fill_means)

  return step_fn, select_from


@functools.lru_cache(maxsize=8)
def _jitted_train_step(graphdef, dtype, layout, mesh, seed_axis: bool):
  """The jitted train step of a (model, optimizer) graph, per dtype and state layout.

  Cached because graphs compare by value: a run's seeds, a sweep's points and later runs in the same
  process with the same model structure and optimizer (`make_optimizer` returns one object per
  `optim` section) reuse one jitted function, so they neither retrace nor recompile.

  Args:
    graphdef: the static graph of (model, optimizer).
    dtype: compute dtype.
    layout: (treedef, leaves) of the state's shardings, hashable.
    mesh: the device mesh (the metrics are replicated on it).
    seed_axis: vmaps the step over a leading seed axis of state, batch and key (the objective
      and the fill means are shared).

  Returns:
    jitted fn(state, batch, key, objective, fill_means) -> (state, metrics), `state` donated so the
    update happens in place on device.
  """
  shardings = jax.tree.unflatten(*layout)
  # Statics bound once (big_vision style).
  step = functools.partial(train_step, graphdef=graphdef, dtype=dtype)
  if seed_axis:
    step = jax.vmap(step, in_axes=(0, 0, 0, None, None))
  return jax.jit(step, donate_argnums=(0,), out_shardings=(shardings, sharding.replicated(mesh)))


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
  for name in choices.EXTRA_LOSS_TERMS:  # the terms beyond the paper that this run weighs
    if config.loss[f"lambda_{name}"] > 0:
      scalars[f"train/loss_{name}"] = mean[f"loss_{name}"]
  if config.loss.lambda_role > 0:
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
