"""One optimisation step and what it needs: the schedules, the optimizer, the state, the objective.

Pure functions of a (model, optimizer) state split by `nnx.split`; the statics are keyword-only and bound
with `functools.partial` before `jax.jit` (big_vision style), and the loss weights arrive as a traced
`Objective`, so one compiled step serves a whole run, and every run with an equal graph
(`train/loop.py` caches it).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from flmoe_jax.data import store as store_lib
from flmoe_jax.models.factory import build_model


def training_steps(config: ml_collections.ConfigDict, fs: store_lib.FeatureStore) -> int:
  """Optimizer steps of one seed: full batches per epoch (the remainder is dropped) x epochs."""
  n_train = min(fs.counts["train"], config.train.limit_train or fs.counts["train"])
  return (n_train // config.train.batch_size) * config.train.epochs


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """`optim.schedule`: `constant` (the reference); `warmup_cosine` (linear warm-up over
  `optim.warmup_fraction` of the steps, then cosine decay to 0); `warmup_stable_decay` (the same
  warm-up, the peak held, then cosine decay to 0 over the last `optim.decay_fraction` of the steps:
  the early dynamics of a constant rate, a settled model at the end)."""
  o = config.optim
  if o.schedule == "constant":
    return optax.constant_schedule(o.learning_rate)
  warmup = int(round(o.warmup_fraction * total_steps))
  if o.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
      0.0, o.learning_rate, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1)
    )
  decay = max(1, int(round(o.decay_fraction * total_steps)))
  hold_end = max(warmup, total_steps - decay)
  # Without a warm-up its piece ends at step 0 and is never used: the run starts at the peak.
  return optax.join_schedules(
    [
      optax.linear_schedule(0.0, o.learning_rate, transition_steps=max(warmup, 1)),
      optax.constant_schedule(o.learning_rate),
      optax.cosine_decay_schedule(o.learning_rate, decay_steps=decay),
    ],
    boundaries=[warmup, hold_end],
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

  One object per (`optim` section, total_steps): optax transformations are pure functions, and the
  same object makes the (model, optimizer) graphs of a run's seeds, and of later runs in the same
  process, equal, so they reuse one compiled train step (`train/loop.py`).

  Args:
    config: the run config (`optim` section).
    total_steps: optimizer steps of the whole run (for the schedule and the gate warm-up fraction).
  """
  return _optimizer(tuple(sorted(config.optim.to_dict().items())), total_steps)


@functools.lru_cache(maxsize=32)
def _optimizer(optim: tuple, total_steps: int) -> optax.GradientTransformation:
  """`make_optimizer` of the `optim` section's (key, value) pairs."""
  config = ml_collections.ConfigDict({"optim": dict(optim)})
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


def _inputs(batch, dtype):
  # Stores keep float16 on disk; compute in the model's dtype.
  return [x.astype(dtype) for x in batch["x"]], list(batch["mask"])


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Objective:
  """What one training step minimises: the task and the weights of the loss terms (docs/method.md 2).

  A pytree passed to the jitted step: the weights and the start step are traced leaves, so runs and
  sweep points that differ only in them share one compiled step (and the persistent compile cache).
  The task and which extra forward passes run (`runs_noise`, `runs_fill`) are static: they change the
  program. Terms beyond the paper are 0 (off, no extra forward passes) unless set.

  Attributes:
    task_type: multilabel | multiclass | binary (static).
    lambda_int: interaction-loss weight (ignored by the dense baseline).
    lambda_role: role-consistency weight.
    lambda_missing: missing-modality task weight.
    lambda_decor: uniqueness-decorrelation weight.
    lambda_red_alone: weight of the redundancy expert's own task loss with one modality absent. It
      applies from the first step: it trains the redundancy expert alone and does not compete with
      the mixture.
    lambda_syn_residual: weight of the synergy expert's task loss at full weight beside the other
      experts' contributions (not scaled by its gate weight). It applies from the first step.
    extra_start_step: optimizer step from which lambda_missing and lambda_decor apply (their terms
      are still computed and logged before it, with weight 0).
    runs_noise: whether the noise-perturbed variants run (static; default: lambda_int != 0).
    runs_fill: whether the mean-filled (one modality absent) variants run (static; default: a term
      that reads them has a weight > 0).
  """

  task_type: str = dataclasses.field(metadata={"static": True})
  lambda_int: float
  lambda_role: float = 0.0
  lambda_missing: float = 0.0
  lambda_decor: float = 0.0
  lambda_red_alone: float = 0.0
  lambda_syn_residual: float = 0.0
  extra_start_step: int = 0
  runs_noise: bool | None = dataclasses.field(default=None, metadata={"static": True})
  runs_fill: bool | None = dataclasses.field(default=None, metadata={"static": True})

  def __post_init__(self):
    # Decided once from the Python weights; a traced copy (inside the step) carries them as statics.
    if self.runs_noise is None:
      object.__setattr__(self, "runs_noise", bool(self.lambda_int))
    if self.runs_fill is None:
      fill = self.lambda_role > 0 or self.lambda_missing > 0 or self.lambda_red_alone > 0
      object.__setattr__(self, "runs_fill", bool(fill))

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
      lambda_syn_residual=loss.lambda_syn_residual,
      extra_start_step=extra_start_step(config, total_steps),
    )


def train_step(state, batch, key, objective: Objective, fill_means=None, *, graphdef, dtype):
  """One optimisation step.

  Args:
    state: the (model, optimizer) state pytree (donated).
    batch: {"x": tuple [B, T_m, D_m], "mask": tuple bool [B, T_m], "label": ..., "weight": [B]}.
    key: this step's PRNG key (the run key folded with the step).
    objective: the task and loss weights (a pytree: weights traced, structure static).
    fill_means: M raw train-split means [D_m] (the store's `stats/`), needed when the objective
      reads mean-filled variants (`Objective.runs_fill`).
    graphdef: static graph of (model, optimizer).
    dtype: compute dtype.

  Returns:
    (new state, metrics dict of scalars / small arrays, all on device).
  """
  obj = objective
  use_fill = obj.runs_fill
  if use_fill and fill_means is None:
    raise ValueError(
      "lambda_role, lambda_missing or lambda_red_alone > 0 needs fill_means (the store's"
      " train-split means)"
    )
  model, optimizer = nnx.merge(graphdef, state)
  xs, masks = _inputs(batch, dtype)
  # A traced 0/1 switch, not a Python branch: one compiled step serves the whole run (and every run
  # that differs only in the start step).
  extra_on = (optimizer.step[...] >= obj.extra_start_step).astype(jnp.float32)
  dropout_key, noise_key = jax.random.split(key)

  weights = {
    "lambda_int": obj.lambda_int,
    "lambda_role": obj.lambda_role,
    "lambda_missing": obj.lambda_missing * extra_on,
    "lambda_decor": obj.lambda_decor * extra_on,
    "lambda_red_alone": obj.lambda_red_alone,
    "lambda_syn_residual": obj.lambda_syn_residual,
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
      noise_key=noise_key if obj.runs_noise else None,
      # The mean-filled variants only run when a term reads them (a static choice).
      fill_means=fill_means if use_fill else None,
    )

  grad_fn = nnx.value_and_grad(lambda m: _pack(loss_fn(m)), has_aux=True)
  (loss, (aux, out)), grads = grad_fn(model)
  optimizer.update(model, grads)
  metrics = {
    "loss": loss,
    **{f"loss_{name}": term for name, term in aux.items()},  # task, interaction, role, ...
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
