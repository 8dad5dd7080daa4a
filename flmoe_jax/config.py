"""Config loading: Python config files returning an `ml_collections.ConfigDict`, plus overrides.

`load_config("configs/synthetic.py:arg", ["model.hidden_dim=64"])` imports the file, calls
`get_config(arg)`, locks the dict (so a misspelt key fails) and applies `key=value` overrides, parsing each
value against the type of the key it replaces. Unknown keys are rejected with the list of valid ones.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pathlib
from collections.abc import Sequence

import ml_collections

from flmoe_jax import choices
from flmoe_jax.errors import ConfigError


def _flat_keys(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for k, v in cfg.items():
    if isinstance(v, ml_collections.ConfigDict):
      keys += _flat_keys(v, f"{prefix}{k}.")
    else:
      keys.append(f"{prefix}{k}")
  return keys


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Imports `path[:arg]` and returns `get_config(arg)` (or `get_config()`), unlocked."""
  file, _, arg = str(path).partition(":")
  p = pathlib.Path(file)
  if not p.is_file():
    raise ConfigError(f"config file {file} not found")
  spec = importlib.util.spec_from_file_location(f"_flmoe_config_{p.stem}", p)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 - a user's config file: report, never trace back
    raise ConfigError(f"{file}: failed to import ({type(e).__name__}: {e})") from None
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{file}: defines no get_config()")
  try:
    cfg = module.get_config(arg) if arg else module.get_config()
  except ConfigError as e:
    raise ConfigError(f"{path}: {e}") from None
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(f"{file}: get_config() must return an ml_collections.ConfigDict")
  return cfg


def _parse_value(raw: str, old):
  """Parses an override string against the type of the value it replaces."""
  if isinstance(old, bool):
    low = raw.lower()
    if low in ("true", "1", "yes"):
      return True
    if low in ("false", "0", "no"):
      return False
    raise ValueError(f"expected a boolean, got {raw!r}")
  if isinstance(old, int):
    return int(raw)
  if isinstance(old, float):
    return float(raw)
  if isinstance(old, str) or old is None:
    if old is None:
      try:
        return ast.literal_eval(raw)
      except (ValueError, SyntaxError):
        return raw
    return raw
  if isinstance(old, (tuple, list)):
    val = ast.literal_eval(raw)
    if not isinstance(val, (tuple, list)):
      val = (val,)
    return type(old)(val)
  return ast.literal_eval(raw)


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """Applies `a.b.c=value` overrides in place; unknown keys raise ConfigError listing valid keys."""
  valid = _flat_keys(cfg)
  for item in overrides:
    key, sep, raw = item.partition("=")
    key = key.strip().removeprefix("--").removeprefix("config.")
    if not sep:
      raise ConfigError(f"override {item!r} is not of the form key=value")
    if key not in valid:
      raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(valid))}")
    *parents, leaf = key.split(".")
    node = cfg
    for p in parents:
      node = node[p]
    old = node[leaf]
    try:
      new = _parse_value(raw, old)
    except (ValueError, SyntaxError) as e:
      raise ConfigError(f"config key {key!r}: cannot parse {raw!r} ({e})") from None
    with node.unlocked():
      node[leaf] = new


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads a config file, applies overrides and locks it.

  Args:
    path: `file.py` or `file.py:arg`.
    overrides: `key=value` strings (a leading `config.` or `--config.` is accepted).

  Returns:
    The locked ConfigDict.
  """
  cfg = load_config_file(path)
  cfg.lock()
  apply_overrides(cfg, overrides)
  validate_config(cfg)
  return cfg


def config_to_json(cfg: ml_collections.ConfigDict) -> str:
  """A stable JSON rendering (sorted keys) used to compare runs."""
  return json.dumps(json.loads(cfg.to_json_best_effort()), indent=1, sort_keys=True)


def first_difference(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> str:
  """The first key (sorted) whose value differs, as `key: A there, B here`."""
  fa, fb = (_flat(json.loads(config_to_json(c))) for c in (a, b))
  for key in sorted(set(fa) | set(fb)):
    if fa.get(key) != fb.get(key):
      return f"{key}: {fa.get(key)!r} there, {fb.get(key)!r} here"
  return "no key differs"


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_from_json(text: str) -> ml_collections.ConfigDict:
  """The inverse of `config_to_json` (tuples come back as lists)."""
  return ml_collections.ConfigDict(json.loads(text))


def with_defaults(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A saved run config with the keys added since it was written filled in from `base_config()`.

  A run written before a key existed was trained with that key's default (new keys default to the
  earlier behaviour, e.g. `loss.lambda_role = 0`, `model.attention = "einsum"`), so the filled config
  is the one it was trained with. Changes `cfg` in place and returns it.
  """
  for section, values in base_config().items():
    if isinstance(values, ml_collections.ConfigDict) and section in cfg:
      for key, value in values.items():
        if key not in cfg[section]:
          cfg[section][key] = value
  return cfg


# Config-file arguments that train a comparison model instead of FL-I2MoE (Table A).
MODEL_KIND_ARGS = ("dense", "i2moe")


def apply_model_kind(c: ml_collections.ConfigDict, args: set[str]) -> None:
  """The `dense` / `i2moe` config arguments: the model kind, and the run name's suffix.

  Raises:
    ConfigError: both given.
  """
  kinds = sorted(args & set(MODEL_KIND_ARGS))
  if len(kinds) > 1:
    raise ConfigError("config arguments dense and i2moe exclude each other; pick one")
  if kinds:
    c.model.kind = kinds[0]
    c.name += f"_{kinds[0]}"


def config_args(arg: str, allowed: Sequence[str], *, exclusive: Sequence[str] = ()) -> set[str]:
  """Parses a config file's comma-separated argument (`file.py:a,b`) against the ones it knows.

  Args:
    arg: the text after the colon ("" for none).
    allowed: the arguments the config file understands.
    exclusive: arguments of which at most one may be given.

  Returns:
    The set of given arguments.

  Raises:
    ConfigError: an argument the config file does not know, or two exclusive ones.
  """
  args = {a.strip() for a in str(arg).split(",") if a.strip()}
  unknown = sorted(args - set(allowed))
  if unknown:
    raise ConfigError(
      f"unknown config argument {unknown[0]!r}; this config takes {', '.join(allowed) or 'none'}"
      " (comma-separated, e.g. file.py:" + (allowed[0] if allowed else "") + ")"
    )
  both = sorted(args & set(exclusive))
  if len(both) > 1:
    raise ConfigError(f"config arguments {' and '.join(both)} exclude each other; pick one")
  return args


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


# Every checked key: (test, what it must be). Read by `validate_config`.
_CHECKS = {
  "name": (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string"),
  "store": (lambda v: isinstance(v, str), "a string (a feature store folder)"),
  "model.kind": (lambda v: v in ("fl_i2moe", "i2moe", "dense"), "'fl_i2moe', 'i2moe' or 'dense'"),
  "model.hidden_dim": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
  "model.num_heads": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
  "model.num_layers": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
  "model.mlp_ratio": (lambda v: _is_num(v) and v > 0, "a number > 0"),
  "model.dropout": (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
  "model.rw_layers": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
  "model.rw_hidden": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
  "model.temperature": (lambda v: _is_num(v) and v > 0, "a number > 0"),
  "model.ln_eps": (lambda v: _is_num(v) and v > 0, "a number > 0"),
  "model.torch_init": (lambda v: isinstance(v, bool), "true or false"),
  "model.identical_expert_init": (lambda v: isinstance(v, bool), "true or false"),
  "model.dtype": (lambda v: v in ("float32", "bfloat16"), "'float32' or 'bfloat16'"),
  "loss.lambda_int": (lambda v: _is_num(v) and v >= 0, "a number >= 0"),
  **{
    f"loss.lambda_{name}": (lambda v: _is_num(v) and v >= 0, "a number >= 0")
    for name in choices.EXTRA_LOSS_TERMS
  },
  "loss.extra_start_step": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
  "loss.extra_start_fraction": (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
  "optim.learning_rate": (lambda v: _is_num(v) and v > 0, "a number > 0"),
  "optim.b1": (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
  "optim.b2": (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
  "optim.eps": (lambda v: _is_num(v) and v > 0, "a number > 0"),
  "optim.weight_decay": (lambda v: _is_num(v) and v >= 0, "a number >= 0"),
  "optim.grad_clip_norm": (lambda v: _is_num(v) and v >= 0, "a number >= 0 (0 = off)"),
  "optim.gate_warmup_steps": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
  "optim.gate_warmup_fraction": (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
  "optim.warmup_fraction": (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
  "optim.decay_fraction": (lambda v: _is_num(v) and 0 < v <= 1, "a number in (0, 1]"),
  "train.batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
  "train.eval_batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
  "train.epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
  "train.seeds": (
    lambda v: (
      isinstance(v, (tuple, list))
      and len(v) >= 1
      and all(_is_int(s) and s >= 0 for s in v)
      and len(set(v)) == len(v)
    ),
    "a non-empty list of distinct integers >= 0, e.g. (0, 1)",
  ),
  "train.log_every_steps": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
  "train.keep_checkpoints": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
  "train.selection_metric": (
    lambda v: v in ("", "macro_f1", "micro_f1", "samples_f1", "exact_match", "accuracy", "auroc"),
    "'' (the task's default) or one of macro_f1, micro_f1, samples_f1, exact_match, accuracy, "
    "auroc",
  ),
  "train.limit_train": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0 = all)"),
  "train.limit_eval": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0 = all)"),
  "train.progress": (lambda v: isinstance(v, bool), "true or false"),
  "train.vmap_seeds": (lambda v: isinstance(v, bool), "true or false"),
  "train.init_from": (lambda v: isinstance(v, str), "a run directory, or '' for none"),
  "train.prng_impl": (
    lambda v: v in ("threefry2x32", "rbg", "unsafe_rbg"),
    "'threefry2x32', 'rbg' or 'unsafe_rbg'",
  ),
  "mesh.shape": (
    lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(s) for s in v),
    "two integers (data, expert), -1 = all remaining devices",
  ),
  "mesh.axes": (lambda v: tuple(v) == ("data", "expert"), "('data', 'expert')"),
  "distributed.initialize": (lambda v: v in ("auto", "on", "off"), "'auto', 'on' or 'off'"),
  "distributed.coordinator_address": (
    lambda v: isinstance(v, str) and (not v or ":" in v),
    "'' or host:port (e.g. '10.0.0.1:1234')",
  ),
  "distributed.num_processes": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0 = auto)"),
  "distributed.process_id": (lambda v: _is_int(v) and v >= -1, "an integer >= 0 (-1 = auto)"),
  "distributed.initialization_timeout": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
  "distributed.cpu_collectives": (lambda v: v in ("gloo", "mpi"), "'gloo' or 'mpi'"),
}


def validate_config(cfg: ml_collections.ConfigDict) -> None:
  """Checks the type and range of every run option, before anything is built or written.

  Raises:
    ConfigError: naming the first bad key, its value and what it must be.
  """
  for key, (ok, want) in _CHECKS.items():
    node = cfg
    for part in key.split("."):
      if part not in node:
        raise ConfigError(f"config key {key!r} is missing (start configs from base_config())")
      node = node[part]
    if not ok(node):
      raise ConfigError(f"config key {key!r} is {node!r}; it must be {want}")
  for section, key, allowed in (
    ("model", "attention", choices.ATTENTION_IMPLEMENTATIONS),
    ("model", "position", choices.POSITION_ENCODINGS),
    ("optim", "schedule", choices.LR_SCHEDULES),
  ):
    if cfg[section][key] not in allowed:
      raise ConfigError(
        f"config key '{section}.{key}' is {cfg[section][key]!r}; it must be one of "
        f"{', '.join(allowed)}"
      )
  # Schedule points given either as a step count or as a share of the run, never both.
  for section, steps, share in (
    ("optim", "gate_warmup_steps", "gate_warmup_fraction"),
    ("loss", "extra_start_step", "extra_start_fraction"),
  ):
    if cfg[section][steps] and cfg[section][share]:
      raise ConfigError(
        f"{section}.{steps} and {section}.{share} are both set; set one (the other 0)"
      )
  o = cfg.optim
  if o.schedule == "warmup_stable_decay" and o.warmup_fraction + o.decay_fraction > 1:
    raise ConfigError(
      f"optim.warmup_fraction {o.warmup_fraction} + optim.decay_fraction {o.decay_fraction} "
      "exceed 1: the warm-up and the decay of warmup_stable_decay would overlap"
    )
  if cfg.train.vmap_seeds and cfg.train.prng_impl != "threefry2x32":
    raise ConfigError(
      f"train.vmap_seeds needs train.prng_impl='threefry2x32' (got {cfg.train.prng_impl!r}: its "
      "keys draw other numbers under vmap, so the seeds would not equal their separate runs)"
    )
  d = cfg.distributed
  if d.num_processes and d.process_id >= d.num_processes:
    raise ConfigError(
      f"distributed.process_id {d.process_id} is not below distributed.num_processes "
      f"{d.num_processes} (processes are numbered from 0)"
    )
  if cfg.model.hidden_dim % cfg.model.num_heads:
    raise ConfigError(
      f"model.hidden_dim {cfg.model.hidden_dim} is not divisible by model.num_heads "
      f"{cfg.model.num_heads}"
    )


def resolve_path(p: str, base: str | os.PathLike | None = None) -> pathlib.Path:
  """Expands `~` and makes relative paths relative to `base` (default: the working directory)."""
  q = pathlib.Path(os.path.expanduser(p))
  if not q.is_absolute() and base is not None:
    q = pathlib.Path(base) / q
  return q


def base_config() -> ml_collections.ConfigDict:
  """Every key a run config has, with the paper's MM-IMDb values (docs/method.md section 2.3) as defaults.

  Dataset configs in `configs/` start from this and change what differs.
  """
  c = ml_collections.ConfigDict()
  c.name = "run"
  # Feature store to train on (docs/feature_store.md). Relative paths are relative to the working dir.
  c.store = ""
  # When non-empty, `flmoe train` builds a synthetic planted-interaction store at `store` if it is missing
  # (the keyword arguments of flmoe_jax.data.synthetic.PlantedConfig).
  c.synthetic = ml_collections.ConfigDict()

  _add_model(c)
  _add_loss(c)
  _add_optim(c)
  _add_train(c)
  _add_mesh(c)
  _add_distributed(c)
  return c


def _add_model(c: ml_collections.ConfigDict) -> None:
  """The `model` section: the architecture (sizes, attention, positions, init, dtype)."""
  c.model = ml_collections.ConfigDict()
  c.model.kind = (
    "fl_i2moe"  # "dense": the dense-transformer baseline (one expert, task loss only); "i2moe":
    # the original I2MoE (the same experts over one pooled vector per modality)
  )
  c.model.hidden_dim = 256
  c.model.num_heads = 4
  c.model.num_layers = 2
  c.model.mlp_ratio = 2
  c.model.dropout = 0.5
  c.model.rw_layers = 2
  c.model.rw_hidden = 256
  c.model.temperature = 2.0
  c.model.ln_eps = 1e-5  # PyTorch's LayerNorm default (Flax's is 1e-6)
  c.model.torch_init = True  # kaiming-uniform(a=sqrt(5)) kernels and uniform biases, as nn.Linear
  c.model.identical_expert_init = (
    True  # the reference deep-copies one initialised expert (docs/method.md 1.4)
  )
  # Experts' attention: `einsum` (explicit, gives the attention maps explanations read) or a fused
  # `jax.nn.dot_product_attention` backend, `xla` or `cudnn` (GPU, bfloat16), used by the calls that
  # need no maps, no attention delta and no dropout (probes, masking curves, evaluation).
  c.model.attention = "einsum"
  # How position reaches the experts: "sinusoidal" (the paper's fixed table) or "learned" (a table
  # per expert drawn from N(0, 1); docs/ground_truth.md section 5).
  c.model.position = "sinusoidal"
  c.model.dtype = "float32"  # compute dtype: float32 or bfloat16


def _add_loss(c: ml_collections.ConfigDict) -> None:
  """The `loss` section: the interaction loss weight and the terms beyond the paper."""
  c.loss = ml_collections.ConfigDict()
  c.loss.lambda_int = 0.5
  # Beyond the paper (0 = the paper's objective): ties each expert's logits to its role under the
  # mean-fill masking of the explanations and probes (models/losses.py, docs/architecture.md).
  c.loss.lambda_role = 0.0
  # Beyond the paper (0 = off): the task loss of the mixture with one modality mean-filled, which
  # separates redundancy from two uniqueness experts adding up copies (models/losses.py).
  c.loss.lambda_missing = 0.0
  # Beyond the paper (0 = off): squared batch covariance between the uniqueness experts' logits.
  c.loss.lambda_decor = 0.0
  # Beyond the paper (0 = off): the redundancy expert's own task loss with one modality mean-filled,
  # from the first step; with the role term it makes that expert carry what each modality alone tells
  # (models/losses.py). It does not go through the gate.
  c.loss.lambda_red_alone = 0.0
  # Beyond the paper (0 = off): the synergy expert's task loss at full weight beside the other experts'
  # contributions, from the first step: its gradient is not scaled by its gate weight, so a gate that
  # turned away from it before it found an interaction does not stop it learning (models/losses.py).
  c.loss.lambda_syn_residual = 0.0
  # Optimizer step from which lambda_missing and lambda_decor apply (0 = from the first step). The best
  # checkpoint is chosen among the epochs that end at least a whole epoch after it (trained with the
  # whole objective), and the last epoch.
  c.loss.extra_start_step = 0
  # The same as a fraction of the run's steps (used when extra_start_step is 0): on a larger store
  # the two terms must wait until the interactions are learnt (docs/ground_truth.md section 5).
  c.loss.extra_start_fraction = 0.0


def _add_optim(c: ml_collections.ConfigDict) -> None:
  """The `optim` section: Adam, its schedule, clipping and the gate warm-up."""
  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-4
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.0
  # 0 = off. The reference's clip_grad_norm_(1.0) runs after optimizer.step() and so never clips.
  c.optim.grad_clip_norm = 0.0
  # Beyond the paper (0 = off): steps during which the reweighting gate is not updated.
  c.optim.gate_warmup_steps = 0
  # The same as a fraction of the run's steps (used when gate_warmup_steps is 0): it keeps its
  # meaning when the data size or the epochs change.
  c.optim.gate_warmup_fraction = 0.0
  # Learning-rate schedule: "constant" (the reference), "warmup_cosine" (linear warm-up over
  # warmup_fraction of the steps, then cosine decay to 0) or "warmup_stable_decay" (the same warm-up,
  # the peak held, then cosine decay to 0 over the last decay_fraction of the steps).
  c.optim.schedule = "constant"
  c.optim.warmup_fraction = 0.0
  c.optim.decay_fraction = 0.3


def _add_train(c: ml_collections.ConfigDict) -> None:
  """The `train` section: batches, epochs, seeds, logging, checkpoints, selection."""
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32
  c.train.eval_batch_size = 64
  c.train.epochs = 40
  c.train.seeds = (0, 1, 2)
  c.train.log_every_steps = 50
  c.train.keep_checkpoints = 2
  c.train.selection_metric = (
    ""  # "" = macro_f1 for multilabel, accuracy otherwise (as the reference)
  )
  c.train.limit_train = 0  # > 0: use only the first N training examples (quick runs)
  c.train.limit_eval = 0
  # Fine-tuning: a run directory whose best checkpoint (of its first finished seed) initialises the
  # model's parameters (e.g. `flmoe convert` of the authors' weights); "" = a fresh initialisation.
  c.train.init_from = ""
  c.train.progress = True
  # Train the seeds that have not started in one compiled program over a seed axis (each seed keeps
  # its own init, data order, keys, checkpoints and metrics: the numbers of its separate run).
  c.train.vmap_seeds = False
  # PRNG for dropout and perturbation noise. "rbg" is about 2x faster on CPU; "threefry2x32" (JAX's
  # default) gives the same numbers on every mesh layout.
  c.train.prng_impl = "threefry2x32"


def _add_mesh(c: ml_collections.ConfigDict) -> None:
  """The `mesh` section: the device mesh and its logical-axis rules."""
  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (-1, 1)
  c.mesh.axes = ("data", "expert")
  # Logical axis -> mesh axis (MaxText-style rules as data).
  c.mesh.rules = (("batch", "data"), ("expert", "expert"))


def _add_distributed(c: ml_collections.ConfigDict) -> None:
  """The `distributed` section: how several processes connect (docs/scaling.md)."""
  # Several processes (a TPU slice, GPU hosts, CPU hosts) training one run: JAX's distributed
  # runtime (docs/scaling.md). Not part of the run's identity: a run started on one process resumes
  # on several, and the reverse.
  c.distributed = ml_collections.ConfigDict()
  # "auto": start it when a coordinator is named (here or in JAX_COORDINATOR_ADDRESS) or the
  # launcher runs several processes (SLURM, Open MPI, a multi-host Cloud TPU); "on": always (JAX
  # detects what is not given); "off": never.
  c.distributed.initialize = "auto"
  c.distributed.coordinator_address = ""  # host:port of process 0
  c.distributed.num_processes = 0  # 0 = from the environment
  c.distributed.process_id = -1  # -1 = from the environment
  c.distributed.initialization_timeout = 300  # seconds to wait for every process to connect
  # Cross-process collectives of the CPU backend (the GPU and TPU backends bring their own).
  c.distributed.cpu_collectives = "gloo"
