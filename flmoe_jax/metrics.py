"""Evaluation metrics, a JSONL metric writer, a progress display and a NaN/Inf guard.

The metric functions are plain numpy: they run once per evaluation pass on predictions that have
already been gathered to the host, so there is nothing to gain from jitting them. They accept
numpy or JAX arrays (of any float dtype, bfloat16 included) and return dicts of Python floats.

Every metric function takes an optional `weights` array of shape [N]. It is a 0/1 *validity
mask*, not a sample weighting: rows with weight 0 (the padding rows of a last, partial batch) are
dropped before anything is computed, and rows with weight 1 count normally. Any other weight value
is rejected.

Conventions (all chosen to match scikit-learn, which the tests use as an oracle):

* F1 of a class or sample with no true and no predicted positives is 0 (scikit-learn's
  `zero_division=0`).
* Multilabel macro-F1 averages over all C classes, so such empty classes pull it down, exactly as
  `f1_score(y, p, average='macro', zero_division=0)` does on indicator matrices.
* Multiclass and binary macro-F1 average over the classes that occur in the labels or in the
  predictions (scikit-learn's default `labels=None`); classes absent from both are not counted.
* AUROC is rank based (Mann-Whitney U with average ranks for ties). It is NaN when undefined:
  fewer than two classes among the valid labels. The `auroc` key is always present.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from flmoe_jax import atomic

__all__ = [
  "TASK_TYPES",
  "MetricWriter",
  "NonFiniteError",
  "Progress",
  "binary_metrics",
  "check_finite",
  "compute_metrics",
  "default_selection_metric",
  "multiclass_metrics",
  "multilabel_metrics",
  "read_metrics",
]

TASK_TYPES = ("multilabel", "multiclass", "binary")


# ------------------------------------------------------------------------------------------------
# Helpers.
# ------------------------------------------------------------------------------------------------


def _as_float_logits(logits: Any) -> np.ndarray:
  """Converts logits to a float64 numpy array, rejecting NaN."""
  out = np.asarray(logits).astype(np.float64)
  if np.isnan(out).any():
    raise ValueError("logits contain NaN; cannot compute metrics on a diverged model")
  return out


def _valid_rows(weights: Any, n: int) -> np.ndarray | None:
  """Returns a boolean row mask [N] from a 0/1 weights array, or None when weights is None."""
  if weights is None:
    return None
  w = np.asarray(weights).astype(np.float64).reshape(-1)
  if w.shape[0] != n:
    raise ValueError(f"weights has {w.shape[0]} entries but there are {n} rows")
  if not np.all((w == 0.0) | (w == 1.0)):
    raise ValueError("weights must be a 0/1 validity mask (padding rows 0, real rows 1)")
  return w == 1.0


def _apply_mask(mask: np.ndarray | None, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
  """Keeps the rows where `mask` is True (all rows when it is None); requires at least one row."""
  if mask is not None:
    arrays = tuple(a[mask] for a in arrays)
  if arrays[0].shape[0] == 0:
    raise ValueError("no valid rows to compute metrics on (empty input or all weights are 0)")
  return arrays


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
  """F1 = 2tp / (2tp + fp + fn), elementwise, with 0 where the denominator is 0."""
  tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
  denom = 2.0 * tp + fp + fn
  return np.divide(2.0 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def _single_label_macro_f1(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
  """Macro-F1 over classes present in `labels` or `preds` (scikit-learn's default label set).

  Args:
    labels: int [N] true classes in [0, num_classes).
    preds: int [N] predicted classes in [0, num_classes).
    num_classes: C.

  Returns:
    The unweighted mean F1 over the classes that occur in either array.
  """
  tp = np.bincount(labels[labels == preds], minlength=num_classes)
  true_count = np.bincount(labels, minlength=num_classes)
  pred_count = np.bincount(preds, minlength=num_classes)
  fp = pred_count - tp
  fn = true_count - tp
  present = (true_count + pred_count) > 0
  return float(_f1_from_counts(tp, fp, fn)[present].mean())


def _rank_average(x: np.ndarray) -> np.ndarray:
  """1-based ranks of `x` [N], tied values sharing their average rank (scipy's 'average')."""
  n = x.shape[0]
  order = np.argsort(x, kind="mergesort")
  xs = x[order]
  new_group = np.empty(n, dtype=bool)
  new_group[:1] = True
  new_group[1:] = xs[1:] != xs[:-1]
  starts = np.flatnonzero(new_group)
  ends = np.append(starts[1:], n)  # exclusive
  group_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
  ranks = np.empty(n, dtype=np.float64)
  ranks[order] = group_rank[np.cumsum(new_group) - 1]
  return ranks


def binary_auroc(is_positive: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve via the Mann-Whitney U statistic, ties counting one half.

  Args:
    is_positive: bool [N].
    scores: float [N]; higher means more positive.

  Returns:
    AUROC in [0, 1], or NaN when all rows belong to one class.
  """
  n_pos = int(is_positive.sum())
  n_neg = is_positive.shape[0] - n_pos
  if n_pos == 0 or n_neg == 0:
    return math.nan
  rank_sum = _rank_average(scores)[is_positive].sum()
  return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _softmax(logits: np.ndarray) -> np.ndarray:
  """Row softmax of float64 logits [N, C]."""
  z = logits - logits.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def _check_int_labels(labels: Any, n: int, num_classes: int) -> np.ndarray:
  """Returns labels as an int64 [N] array, checking shape and range."""
  y = np.asarray(labels)
  if y.ndim != 1 or y.shape[0] != n:
    raise ValueError(f"labels must have shape [{n}], got {y.shape}")
  if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
    if not np.all(np.equal(np.mod(y, 1), 0)):
      raise ValueError("labels must be integer class ids")
  y = y.astype(np.int64)
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
  return y


# ------------------------------------------------------------------------------------------------
# Metrics.
# ------------------------------------------------------------------------------------------------


def multilabel_metrics(
  logits: Any, labels: Any, threshold: float = 0.5, weights: Any = None
) -> dict[str, float]:
  """Multilabel F1 scores and subset accuracy.

  A label is predicted positive when `sigmoid(logit) > threshold`, evaluated as
  `logit > log(threshold / (1 - threshold))` so that saturated logits are handled exactly.

  Args:
    logits: float [N, C] per-label logits.
    labels: uint8/bool/int [N, C] 0/1 targets.
    threshold: probability threshold in (0, 1).
    weights: optional [N] 0/1 validity mask; rows with weight 0 are ignored.

  Returns:
    A dict with
      `micro_f1`: F1 of the pooled (sample, label) decisions;
      `macro_f1`: mean over all C labels of the per-label F1 (a label with no true and no
        predicted positives scores 0);
      `samples_f1`: mean over samples of the per-sample F1 (a sample with no true and no
        predicted labels scores 0), i.e. `f1_score(average='samples', zero_division=0)`;
      `exact_match`: fraction of samples whose whole label vector is predicted exactly;
      `num_examples`: number of valid rows.

  Raises:
    ValueError: on bad shapes, a threshold outside (0, 1), NaN logits or no valid rows.
  """
  x = _as_float_logits(logits)
  y = np.asarray(labels)
  if x.ndim != 2 or y.shape != x.shape:
    raise ValueError(f"logits and labels must both be [N, C]; got {x.shape} and {y.shape}")
  if not 0.0 < threshold < 1.0:
    raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
  y = y.astype(bool) if y.dtype == np.bool_ else y.astype(np.float64) > 0.5
  x, y = _apply_mask(_valid_rows(weights, x.shape[0]), x, y)
  pred = x > math.log(threshold / (1.0 - threshold))

  tp = pred & y
  fp = pred & ~y
  fn = ~pred & y
  micro = _f1_from_counts(tp.sum(), fp.sum(), fn.sum())
  macro = _f1_from_counts(tp.sum(0), fp.sum(0), fn.sum(0)).mean()
  samples = _f1_from_counts(tp.sum(1), fp.sum(1), fn.sum(1)).mean()
  exact = np.all(pred == y, axis=1).mean()
  return {
    "micro_f1": float(micro),
    "macro_f1": float(macro),
    "samples_f1": float(samples),
    "exact_match": float(exact),
    "num_examples": float(x.shape[0]),
  }


def multiclass_metrics(logits: Any, labels: Any, weights: Any = None) -> dict[str, float]:
  """Accuracy, macro-F1 and one-vs-one macro AUROC for single-label classification.

  The AUROC is Hand & Till's (2001) multiclass AUC on softmax probabilities: for every pair of
  classes (a, b) that both occur in the valid labels, the rows of those two classes are scored
  with AUROC(a vs b; p_a) and AUROC(b vs a; p_b); the pair's score is their mean, and the result
  is the unweighted mean over pairs. This equals scikit-learn's
  `roc_auc_score(labels, softmax(logits), multi_class='ovo', average='macro', labels=range(C))`.

  Args:
    logits: float [N, C] class logits.
    labels: int [N] class ids in [0, C).
    weights: optional [N] 0/1 validity mask; rows with weight 0 are ignored.

  Returns:
    A dict with `accuracy`, `macro_f1` (over classes present in labels or predictions), `auroc`
    (NaN when fewer than two classes occur in the valid labels) and `num_examples`.

  Raises:
    ValueError: on bad shapes, out-of-range labels, NaN logits or no valid rows.
  """
  x = _as_float_logits(logits)
  if x.ndim != 2:
    raise ValueError(f"logits must be [N, C], got {x.shape}")
  n, num_classes = x.shape
  y = _check_int_labels(labels, n, num_classes)
  x, y = _apply_mask(_valid_rows(weights, n), x, y)
  pred = np.argmax(x, axis=-1)

  probs = _softmax(x)
  present = np.unique(y)
  pair_scores = []
  for a, b in itertools.combinations(present, 2):
    rows = (y == a) | (y == b)
    y_ab = y[rows]
    a_vs_b = binary_auroc(y_ab == a, probs[rows, a])
    b_vs_a = binary_auroc(y_ab == b, probs[rows, b])
    pair_scores.append((a_vs_b + b_vs_a) / 2.0)
  auroc = float(np.mean(pair_scores)) if pair_scores else math.nan

  return {
    "accuracy": float(np.mean(pred == y)),
    "macro_f1": _single_label_macro_f1(y, pred, num_classes),
    "auroc": auroc,
    "num_examples": float(x.shape[0]),
  }


def binary_metrics(logits: Any, labels: Any, weights: Any = None) -> dict[str, float]:
  """Accuracy, macro-F1 and AUROC for binary classification.

  Logits may be two-class, [N, 2] (predicted class = argmax; the AUROC score is
  `logit_1 - logit_0`, a monotone function of the softmax probability of class 1 that does not
  saturate), or a single positive-class logit [N] or [N, 1] (predicted positive when > 0).

  Args:
    logits: float [N, 2], [N, 1] or [N].
    labels: int/bool [N] in {0, 1}.
    weights: optional [N] 0/1 validity mask; rows with weight 0 are ignored.

  Returns:
    A dict with `accuracy`, `macro_f1` (mean F1 of classes 0 and 1 over those present in labels or
    predictions), `auroc` (Mann-Whitney with average ranks for tied scores; NaN when only one class
    occurs in the valid labels) and `num_examples`.

  Raises:
    ValueError: on bad shapes, labels outside {0, 1}, NaN logits or no valid rows.
  """
  x = _as_float_logits(logits)
  if x.ndim == 2 and x.shape[1] == 2:
    score = x[:, 1] - x[:, 0]
    pred = np.argmax(x, axis=-1)
  elif x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1):
    score = x.reshape(-1)
    pred = (score > 0).astype(np.int64)
  else:
    raise ValueError(f"binary logits must be [N, 2], [N, 1] or [N], got {x.shape}")
  n = score.shape[0]
  y = _check_int_labels(labels, n, 2)
  score, pred, y = _apply_mask(_valid_rows(weights, n), score, pred, y)
  return {
    "accuracy": float(np.mean(pred == y)),
    "macro_f1": _single_label_macro_f1(y, pred, 2),
    "auroc": binary_auroc(y == 1, score),
    "num_examples": float(score.shape[0]),
  }


def compute_metrics(
  task_type: str, logits: Any, labels: Any, weights: Any = None
) -> dict[str, float]:
  """Dispatches to the metric function of a task type.

  Args:
    task_type: 'multilabel', 'multiclass' or 'binary'.
    logits: [N, C] (or [N] / [N, 1] / [N, 2] for binary) model outputs.
    labels: [N, C] 0/1 targets (multilabel) or [N] class ids.
    weights: optional [N] 0/1 validity mask; padding rows (weight 0) are ignored.

  Returns:
    The metric dict of `multilabel_metrics`, `multiclass_metrics` or `binary_metrics`.

  Raises:
    ValueError: for an unknown task type, or anything the metric function rejects.
  """
  if task_type == "multilabel":
    return multilabel_metrics(logits, labels, weights=weights)
  if task_type == "multiclass":
    return multiclass_metrics(logits, labels, weights=weights)
  if task_type == "binary":
    return binary_metrics(logits, labels, weights=weights)
  raise ValueError(f"unknown task_type {task_type!r}; expected one of {TASK_TYPES}")


def default_selection_metric(task_type: str) -> str:
  """The metric (higher is better) used to select the best checkpoint for a task type.

  Args:
    task_type: 'multilabel', 'multiclass' or 'binary'.

  Returns:
    'macro_f1' for multilabel, 'accuracy' for multiclass and binary.
  """
  if task_type == "multilabel":
    return "macro_f1"
  if task_type in ("multiclass", "binary"):
    return "accuracy"
  raise ValueError(f"unknown task_type {task_type!r}; expected one of {TASK_TYPES}")


# ------------------------------------------------------------------------------------------------
# Metric logging.
# ------------------------------------------------------------------------------------------------


def _to_scalar(name: str, value: Any) -> float:
  """Converts a Python/numpy/JAX scalar (or size-1 array) to a Python float (bools/ints too)."""
  if isinstance(value, bool | int | float):
    return float(value)
  arr = np.asarray(value)
  if arr.size != 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
    raise TypeError(
      f"metric {name!r} must be a numeric scalar, got {type(value).__name__} "
      f"with shape {arr.shape} and dtype {arr.dtype}"
    )
  return float(arr.astype(np.float64).reshape(()))


class MetricWriter:
  """Appends one JSON object per `write` call to `<workdir>/<filename>` (JSON Lines).

  Each line is `{"step": <int>, "<name>": <float>, ...}`, written with a single `write` call and
  flushed, so a reader (or a crash) sees whole lines only, except possibly a truncated last line,
  which `read_metrics` skips. Non-finite values are written as the JSON extensions `NaN`,
  `Infinity` and `-Infinity`, which Python's json module reads back.

  Only process 0 (`jax.process_index() == 0`) opens and writes the file; elsewhere every method is
  a no-op, so multi-host code can call it unconditionally.

  Args:
    workdir: directory of the run; created if missing.
    filename: file name inside `workdir`.
  """

  def __init__(self, workdir: str | os.PathLike, *, filename: str = "metrics.jsonl"):
    self.path = os.path.join(os.fspath(workdir), filename)
    self._file = None
    if jax.process_index() == 0:
      os.makedirs(os.fspath(workdir), exist_ok=True)
      self._file = open(self.path, "a", encoding="utf-8")

  def write(self, step: int, /, **scalars: Any) -> None:
    """Appends `{"step": step, **scalars}` as one line.

    Args:
      step: the training step (any integer-like scalar).
      **scalars: metric values; Python, numpy or JAX scalars (size-1 arrays), stored as floats.

    Raises:
      TypeError: when a value is not a numeric scalar.
      ValueError: when a metric is named 'step' or the writer is closed.
    """
    if jax.process_index() != 0:
      return
    if self._file is None:
      raise ValueError(f"MetricWriter for {self.path} is closed")
    if "step" in scalars:
      raise ValueError("'step' is reserved for the step argument")
    record: dict[str, Any] = {"step": int(np.asarray(step).reshape(()))}
    for name, value in scalars.items():
      record[name] = _to_scalar(name, value)
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()

  def rewind(self, *, seed: int, step: int) -> int:
    """Drops what a resumed seed wrote after its checkpoint, so no line is repeated.

    A seed resumed from the checkpoint of `step` redoes everything after it: its lines with a larger
    step, and its test lines (written after the last checkpoint), are removed, and so is a line cut
    short by a kill. Lines of other seeds are kept. The file is rewritten atomically.

    Args:
      seed: the seed being resumed (or started: `step` 0).
      step: the step of the checkpoint it resumes from.

    Returns:
      The number of lines removed.
    """
    if self._file is None:
      return 0
    self._file.close()
    with open(self.path, encoding="utf-8") as f:
      lines = [line for line in f.read().split("\n") if line.strip()]
    kept = []
    for line in lines:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:  # a line cut short by a kill
        continue
      redone = record.get("seed") == seed and (
        record.get("step", 0) > step or any(k.startswith("test/") for k in record)
      )
      if not redone:
        kept.append(line)
    if len(kept) != len(lines):
      atomic.write_text(self.path, "".join(line + "\n" for line in kept))
    self._file = open(self.path, "a", encoding="utf-8")
    return len(lines) - len(kept)

  def close(self) -> None:
    """Closes the file; further writes raise. Safe to call twice."""
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Reads a `MetricWriter` file back.

  Args:
    path: the JSONL file, or a directory holding `metrics.jsonl`.

  Returns:
    One dict per written line, in order (blank lines and a truncated final line are skipped).

  Raises:
    json.JSONDecodeError: when a line other than the last is not valid JSON.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    path = os.path.join(path, "metrics.jsonl")
  with open(path, encoding="utf-8") as f:
    lines = [line for line in f.read().split("\n") if line.strip()]
  records = []
  for i, line in enumerate(lines):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i == len(lines) - 1:  # a write interrupted by a crash
        break
      raise
  return records


# ------------------------------------------------------------------------------------------------
# Progress display.
# ------------------------------------------------------------------------------------------------


def _format_postfix(postfix: Mapping[str, Any]) -> dict[str, str]:
  """Formats postfix values: numbers with 4 significant digits, anything else with str()."""
  out = {}
  for name, value in postfix.items():
    try:
      out[name] = f"{_to_scalar(name, value):.4g}"
    except TypeError:
      out[name] = str(value)
  return out


class Progress:
  """A progress display that suits both terminals and CI logs.

  When stderr (or `file`) is a TTY it shows a tqdm bar with rate, ETA and a postfix. Otherwise it
  prints one plain line every `log_every` steps and at `close()`, e.g.
  `train: 150/1000 (15%) elapsed 00:30 eta 02:50 5.00 it/s loss=0.4321`.

  Postfix values may be JAX arrays; converting them to Python floats waits for the device, so in
  bar mode they are converted at most once per tqdm refresh interval, and in log mode only when a
  line is printed. Only process 0 displays anything.

  Args:
    total: expected number of steps, or None when unknown.
    desc: label shown before the bar or at the start of each line.
    log_every: steps between plain log lines (non-TTY mode).
    enabled: False turns every method into a no-op.
    file: stream to write to (default sys.stderr).
  """

  def __init__(
    self,
    total: int | None,
    desc: str,
    *,
    log_every: int = 50,
    enabled: bool = True,
    file: Any = None,
  ):
    if log_every < 1:
      raise ValueError(f"log_every must be >= 1, got {log_every}")
    self.total = total
    self.desc = desc
    self.log_every = log_every
    self.n = 0
    self._file = sys.stderr if file is None else file
    self._enabled = enabled and jax.process_index() == 0
    self._postfix: dict[str, Any] = {}
    self._start = time.monotonic()
    self._last_logged_n = 0
    self._last_postfix_refresh = -math.inf
    self._closed = False
    self._bar = None
    if self._enabled and self._isatty():
      self._bar = tqdm(total=total, desc=desc, file=self._file, dynamic_ncols=True, leave=True)

  def _isatty(self) -> bool:
    isatty = getattr(self._file, "isatty", None)
    try:
      return bool(isatty and isatty())
    except (ValueError, OSError):  # closed or detached stream
      return False

  def update(self, n: int = 1, **postfix: Any) -> None:
    """Advances by `n` steps and replaces the postfix values given (others are kept).

    Args:
      n: number of steps completed since the last call.
      **postfix: values to show, e.g. `loss=loss`.
    """
    if not self._enabled or self._closed:
      return
    self.n += n
    self._postfix.update(postfix)
    if self._bar is not None:
      now = time.monotonic()
      if self._postfix and now - self._last_postfix_refresh >= self._bar.mininterval:
        self._bar.set_postfix(_format_postfix(self._postfix), refresh=False)
        self._last_postfix_refresh = now
      self._bar.update(n)
    elif self.n // self.log_every > self._last_logged_n // self.log_every:
      self._log_line()

  def _log_line(self) -> None:
    elapsed = time.monotonic() - self._start
    parts = [f"{self.desc}: {self.n}"]
    if self.total:
      parts[0] += f"/{self.total} ({100.0 * self.n / self.total:.0f}%)"
    parts.append(f"elapsed {tqdm.format_interval(elapsed)}")
    rate = self.n / elapsed if elapsed > 0 else 0.0
    if self.total and rate > 0:
      parts.append(f"eta {tqdm.format_interval(max(self.total - self.n, 0) / rate)}")
    parts.append(f"{rate:.2f} it/s")
    parts.extend(f"{k}={v}" for k, v in _format_postfix(self._postfix).items())
    print(" ".join(parts), file=self._file, flush=True)
    self._last_logged_n = self.n

  def close(self) -> None:
    """Finishes the bar, or prints a final line if steps were made since the last one."""
    if not self._enabled or self._closed:
      return
    self._closed = True
    if self._bar is not None:
      if self._postfix:
        self._bar.set_postfix(_format_postfix(self._postfix), refresh=False)
      self._bar.close()
    elif self.n != self._last_logged_n:
      self._log_line()

  def __enter__(self) -> Progress:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()


# ------------------------------------------------------------------------------------------------
# NaN/Inf guard.
# ------------------------------------------------------------------------------------------------


class NonFiniteError(ValueError):
  """Raised by `check_finite` when a loss term or metric is NaN or infinite.

  Attributes:
    step: the training step at which it happened.
    names: the names of the non-finite terms, in the order given.
  """

  def __init__(self, step: int, names: Sequence[str], values: Mapping[str, Any] | None = None):
    self.step = step
    self.names = tuple(names)
    if values:
      terms = ", ".join(f"{name}={values[name]}" for name in self.names)
    else:
      terms = ", ".join(self.names)
    super().__init__(f"non-finite value(s) at step {step}: {terms}")


def check_finite(scalars: Mapping[str, Any], step: int) -> None:
  """Raises if any of the given loss terms or metrics is NaN or +-Inf.

  Args:
    scalars: name -> Python/numpy/JAX scalar (or array; every element must be finite).
    step: the current step, reported in the error.

  Raises:
    NonFiniteError: naming the step and every non-finite term with its value.
  """
  bad: dict[str, Any] = {}
  for name, value in scalars.items():
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
      continue
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
      bad[name] = arr.reshape(()).item() if arr.size == 1 else f"array{arr.shape}"
  if bad:
    raise NonFiniteError(step, list(bad), bad)
