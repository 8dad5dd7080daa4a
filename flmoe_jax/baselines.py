"""Reference points for Table A that need no multimodal model: the majority class and one modality.

* `majority_class(fs)`: always answer the most frequent training label (multiclass and binary); for
  multilabel tasks, each label alone, predicted when most training examples carry it.
* `single_modality(fs, modality)`: a small MLP on one modality's mean-pooled features (valid tokens
  only; one hidden layer of 256 ReLU units, full-batch Adam 1e-3 for 500 steps, weight decay 1e-4),
  fitted on the training split with softmax cross-entropy (sigmoid for multilabel tasks): what that
  modality alone tells, e.g. the question-only baseline of a VQA task. It is a probe of the frozen
  features, not a tuned model.

Both return a summary shaped like a training run's `summary.json` (`task`, `seeds`, `mean_std` per
split), so Table A shows them beside the models; metrics are `flmoe_jax.metrics.compute_metrics`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flmoe_jax.data.store import FeatureStore
from flmoe_jax.errors import FlmoeError
from flmoe_jax.metrics import compute_metrics

HIDDEN = 256
STEPS = 500
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4


def _summary(name: str, task: str, metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
  return {
    "name": name,
    "task": task,
    "seeds": ["-"],
    "mean_std": {
      split: {k: {"mean": float(v), "std": None} for k, v in m.items()}
      for split, m in metrics.items()
    },
  }


def _labels(fs: FeatureStore, split: str) -> np.ndarray:
  return np.asarray(fs.split(split).labels)


def _outputs(fs: FeatureStore) -> int:
  return 2 if fs.task.type == "binary" else fs.task.num_classes


def _as_logits(fs: FeatureStore, out: np.ndarray) -> np.ndarray:
  """[N, C] scores -> what `compute_metrics` takes for the task (binary: one logit)."""
  out = np.asarray(out, np.float32)
  return out[:, 1] - out[:, 0] if fs.task.type == "binary" else out


def majority_class(fs: FeatureStore, splits=("test",)) -> dict[str, Any]:
  """Always the most frequent training label.

  Args:
    fs: the feature store.
    splits: splits to score.

  Returns:
    A summary {"name", "task", "seeds", "mean_std": {split: {metric: {"mean", "std": None}}}}.
  """
  train = _labels(fs, "train")
  if fs.task.type == "multilabel":
    # Each label on its own: predicted when more than half the training examples carry it.
    rate = np.clip(train.mean(0), 1e-6, 1 - 1e-6)
    scores = np.log(rate / (1 - rate))
  else:
    counts = np.bincount(train.astype(int), minlength=_outputs(fs))
    scores = np.log(np.maximum(counts, 1) / counts.sum())
  out = {}
  for split in splits:
    y = _labels(fs, split)
    out[split] = compute_metrics(fs.task.type, _as_logits(fs, np.tile(scores, (len(y), 1))), y)
  return _summary("majority class", fs.task.type, out)


def _pooled(fs: FeatureStore, split: str, modality: str) -> np.ndarray:
  """Mean over valid tokens of one modality: float32 [N, D]."""
  s, i = fs.split(split), fs.modality_names.index(modality)
  x = np.asarray(s.features[i], np.float32)
  m = np.asarray(s.masks[i], np.float32)[..., None]
  return (x * m).sum(1) / np.maximum(m.sum(1), 1.0)


def single_modality(
  fs: FeatureStore, modality: str, splits=("test",), *, seed: int = 0
) -> dict[str, Any]:
  """An MLP on one modality's mean-pooled features (see the module docstring).

  Args:
    fs: the feature store.
    modality: the modality name (e.g. `text` for a question-only baseline).
    splits: splits to score.
    seed: initialisation seed.

  Returns:
    A summary like `majority_class`'s.
  """
  if modality not in fs.modality_names:
    raise FlmoeError(f"baselines: store has no modality {modality!r} ({fs.modality_names})")
  x = _pooled(fs, "train", modality)
  mu, sd = x.mean(0), x.std(0) + 1e-6
  multilabel = fs.task.type == "multilabel"
  y = jnp.asarray(_labels(fs, "train").astype(np.float32 if multilabel else np.int32))
  c = _outputs(fs)
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = {
    "w1": jax.random.normal(k1, (x.shape[1], HIDDEN)) * np.sqrt(2.0 / x.shape[1]),
    "b1": jnp.zeros(HIDDEN),
    "w2": jax.random.normal(k2, (HIDDEN, c)) * np.sqrt(1.0 / HIDDEN),
    "b2": jnp.zeros(c),
  }

  def logits_fn(p, a):
    return jax.nn.relu(a @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

  opt = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
  xt = jnp.asarray((x - mu) / sd)

  @jax.jit
  def fit(p):
    def step(carry, _):
      p, s = carry

      def loss_fn(q):
        z = logits_fn(q, xt)
        if multilabel:
          return optax.sigmoid_binary_cross_entropy(z, y).mean()
        return optax.softmax_cross_entropy_with_integer_labels(z, y).mean()

      loss, g = jax.value_and_grad(loss_fn)(p)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), loss

    (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=STEPS)
    return p

  params = fit(params)
  out = {}
  for split in splits:
    xs = jnp.asarray((_pooled(fs, split, modality) - mu) / sd)
    logits = _as_logits(fs, logits_fn(params, xs))
    out[split] = compute_metrics(fs.task.type, logits, _labels(fs, split))
  return _summary(f"{modality} only (MLP on mean-pooled features)", fs.task.type, out)


FORMAT = "flmoe-baselines"
VERSION = 1


def run(workdir, split: str = "test", *, modality: str | None = None) -> dict[str, Any]:
  """Scores the majority class and the one-modality MLP on a run's store; writes
  `W/baselines/<split>.json` ({"format", "version", "store", "split", "models": {name: summary}}).

  Args:
    workdir: a training run directory (its store is used; nothing else in it is touched).
    split: the split to score.
    modality: the modality of the one-modality baseline (default: the store's first, the text of
      a VQA store).

  Returns:
    The document written.
  """
  from flmoe_jax import atomic, runs
  from flmoe_jax.rundir import RunDir

  fs = runs.run_store(workdir)
  modality = modality or fs.modality_names[0]
  doc = {
    "format": FORMAT,
    "version": VERSION,
    "store": str(fs.path),
    "split": split,
    "models": {
      "majority class": majority_class(fs, (split,)),
      f"{modality} only (MLP)": single_modality(fs, modality, (split,)),
    },
  }
  atomic.write_json(RunDir(workdir).baselines(split), doc)
  return doc
