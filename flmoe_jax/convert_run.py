"""`flmoe convert`: reference PyTorch weights -> a run directory that explain, probe and report use.

  flmoe convert --weights model.npz --encoders encoders.npz --store STORE --workdir W

The authors' `InteractionMoE` state dict and encoder projections are read (`flmoe_jax.convert`: sizes
from the weights, every key problem listed in one error), checked against the store (modality count,
input dims, classes), evaluated on its val and test splits, and written as seed 0 of an FL-I2MoE run
whose `best` and `latest` checkpoints hold the reference weights (`RunDir` layout: config.json,
run.json, seed_0/checkpoints/, seed_0/result.json, summary.json, metrics.jsonl). Everything is checked
and computed first and written into a hidden temporary folder renamed into place: a failed
conversion writes nothing, and an existing folder is never touched. Fine-tuning starts from the
converted weights with `train.init_from` (`flmoe train --config.train.init_from=W`).
"""

from __future__ import annotations

import dataclasses
import pathlib

from flmoe_jax.errors import ConfigError, RunDirError
from flmoe_jax.options import StageConfig, documented, option
from flmoe_jax.train_summary import TrainSummary


@documented
@dataclasses.dataclass(frozen=True)
class ConvertConfig(StageConfig):
  """The options of `flmoe convert`, each with its flag and default."""

  error = ConfigError

  weights: str = option("", "the reference InteractionMoE state dict (.npz; .pt with torch)")
  encoders: str = option(
    "", "the encoder projections <modality>.proj.weight / .bias (.npz; .pt with torch)"
  )
  store: str = option("", "the feature store the run is evaluated on and explained over")
  names: str = option(
    "",
    "the reference's modality names, comma-separated, in the store's modality order (default: "
    "the store's names)",
  )
  num_heads: int = option(4, "attention heads (not stored in the weights)", lowest=1)
  temperature: float = option(2.0, "gate softmax temperature (not stored in the weights)")
  name: str = option("converted", "the run's name in reports")

  def validate(self) -> None:
    for flag, value in (("--weights", self.weights), ("--encoders", self.encoders)):
      if not value:
        raise ConfigError(f"{flag} must be given (a reference .npz or .pt file)")
    if not self.store:
      raise ConfigError("--store must be given (the feature store to evaluate the weights on)")
    if not self.temperature > 0:
      raise ConfigError(f"--temperature must be > 0, got {self.temperature}")


def run_convert(cfg: ConvertConfig, workdir, *, log=print) -> TrainSummary:
  """Converts reference weights into a new run directory; returns its summary.

  Args:
    cfg: the options (`ConvertConfig`).
    workdir: the run directory to create (it must not exist, or be an empty folder).
    log: progress printer (None = silent).

  Returns:
    The run's `TrainSummary` (also `workdir/summary.json`): val and test metrics of the reference weights.

  Raises:
    ConversionError: unreadable weights, or weights that do not fit (every key problem at once).
    ConfigError / StoreError / RunDirError: a store that does not match, or an existing workdir;
      nothing is written.
  """
  from flmoe_jax import atomic
  from flmoe_jax.data import store as store_lib

  say = log or (lambda *_: None)
  root = pathlib.Path(workdir)
  if root.exists() and (not root.is_dir() or any(root.iterdir())):
    raise RunDirError(
      f"--workdir {root} already exists; convert writes a new run directory (choose a new folder)"
    )
  fs = store_lib.open_store(cfg.store)
  config, model = _model_for_store(cfg, fs)
  with atomic.replacing(root) as tmp:
    summary = _write_run(config, model, fs, tmp)
  test = {k: round(v.mean, 4) for k, v in summary.mean_std["test"].items()}
  say(f"converted {cfg.weights} -> {root}: test {test}")
  return summary


def _model_for_store(cfg: ConvertConfig, fs):
  """The run config and the FLI2MoE holding the reference weights, both checked against the store."""
  from flmoe_jax import config as config_lib
  from flmoe_jax import convert, train

  names = [n.strip() for n in cfg.names.split(",")] if cfg.names else list(fs.modality_names)
  if len(names) != len(fs.modalities):
    raise ConfigError(
      f"--names gives {len(names)} modalities ({names}); the store has {len(fs.modalities)} "
      f"({list(fs.modality_names)})"
    )
  sd, enc = convert.load_state_dict(cfg.weights), convert.load_state_dict(cfg.encoders)
  sizes = convert.infer_config(sd, enc, names)
  problems = [
    f"{store_name} (reference {ref}): the weights take {dim}-dim features, the store holds "
    f"{spec.dim}"
    for store_name, ref, dim, spec in zip(
      fs.modality_names, names, sizes["input_dims"], fs.modalities
    )
    if dim != spec.dim
  ]
  if sizes["num_classes"] != fs.task.num_classes:
    problems.append(
      f"the weights predict {sizes['num_classes']} classes, the store's task has "
      f"{fs.task.num_classes}"
    )
  if problems:
    raise ConfigError(f"the weights do not fit {fs.path}: " + "; ".join(problems))
  model = convert.from_reference_state_dict(
    sd, enc, names, num_heads=cfg.num_heads, temperature=cfg.temperature
  )
  config = config_lib.base_config()
  config.name = cfg.name
  config.store = str(pathlib.Path(cfg.store).resolve())
  config.train.seeds = (0,)
  # Nothing is trained; the batch only has to fit the store (a later fine-tuning run sets its own).
  config.train.batch_size = min(config.train.batch_size, fs.counts.get("train", 1))
  m = config.model
  m.kind, m.num_heads, m.temperature = "fl_i2moe", cfg.num_heads, float(cfg.temperature)
  for key in ("hidden_dim", "num_layers", "mlp_ratio", "rw_layers", "rw_hidden"):
    m[key] = int(sizes[key])
  config_lib.validate_config(config)
  train.check_store_against_config(config, fs)
  return config, model


def _write_run(config, model, fs, root: pathlib.Path) -> TrainSummary:
  """Evaluates the weights and writes seed 0 of a run (checkpoints, result, summary) into `root`."""
  import jax
  from flax import nnx

  from flmoe_jax import atomic, checkpointing, sharding, train
  from flmoe_jax import metrics as metrics_lib
  from flmoe_jax.artifact import to_plain
  from flmoe_jax.rundir import RunDir
  from flmoe_jax.train_summary import SeedResult

  paths = train.prepare_workdir(config, root, fs=fs)  # config.json, run.json
  graphdef, state = train.init_state(config, fs, seed=0)
  target, optimizer = nnx.merge(graphdef, state)
  nnx.update(target, nnx.state(model, nnx.Param))  # the reference weights, fresh optimizer state
  graphdef, state = nnx.split((target, optimizer))
  rules = tuple(tuple(r) for r in config.mesh.rules)
  mesh = sharding.make_mesh(config.mesh.shape, config.mesh.axes)
  state = jax.device_put(state, sharding.state_shardings(state, mesh, rules))
  run = train.evaluator(config, graphdef, mesh)
  val = run(state, fs, "val")
  test = run(state, fs, "test") if "test" in fs.counts else {}
  sel = train.selection_metric(config, fs)
  meta = {
    "epoch": 0,
    "step": 0,
    "best_metric": float(val[sel]),
    "best_epoch": 0,
    "best_val": val,
    "best_step": 0,
  }
  for path in (paths.best_ckpt(0), paths.latest_ckpt(0)):
    ck = checkpointing.Checkpointer(path, max_to_keep=1)
    ck.save(0, state, meta)
    ck.wait()
    ck.close()
  writer = metrics_lib.MetricWriter(paths.root)
  try:
    writer.write(0, seed=0, epoch=0, **{f"val/{k}": v for k, v in val.items()})
    writer.write(0, seed=0, **{f"test/{k}": v for k, v in test.items()})
  finally:
    writer.close()
  result = SeedResult(
    seed=0,
    best_epoch=0,
    selection_metric=sel,
    best_val={k: float(v) for k, v in val.items()},
    test={k: float(v) for k, v in test.items()},
    steps=0,
    num_parameters=train.count_parameters(graphdef, state),
    converted_from_reference=True,
  )
  atomic.write_json(RunDir(root).result(0), to_plain(result), indent=1)
  summary = train.summarize({0: result}, config=config, fs=fs)
  summary.save(paths.summary)
  return summary
