"""Tests for flmoe_jax.metrics: hand-computed cases and sklearn as an oracle on random data."""

import io
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from flmoe_jax import metrics

# ------------------------------------------------------------------------------------------------
# Multilabel.
# ------------------------------------------------------------------------------------------------

_ML_LOGITS = np.array([[2.0, -1.0, 0.5], [-1.0, -2.0, -3.0], [1.0, 1.0, -1.0]])
_ML_LABELS = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 1]], dtype=np.uint8)


def test_multilabel_hand_computed():
  # Predictions (logit > 0): [1,0,1], [0,0,0], [1,1,0].
  # Per class (tp, fp, fn): c0 (2,0,0) F1=1; c1 (0,1,0) F1=0; c2 (0,1,1) F1=0.
  # Pooled: tp=2, fp=2, fn=1 -> 4/7. Per sample: 2/3, 0 (empty), 2/4.
  m = metrics.multilabel_metrics(_ML_LOGITS, _ML_LABELS)
  assert m["micro_f1"] == pytest.approx(4 / 7)
  assert m["macro_f1"] == pytest.approx(1 / 3)
  assert m["samples_f1"] == pytest.approx((2 / 3 + 0 + 0.5) / 3)
  assert m["exact_match"] == pytest.approx(1 / 3)
  assert m["num_examples"] == 3.0


def test_multilabel_threshold_and_bool_labels():
  # threshold 0.7 <=> logit > log(7/3) ~ 0.847: predictions [1,0,0], [0,0,0], [1,1,0].
  m = metrics.multilabel_metrics(jnp.asarray(_ML_LOGITS), _ML_LABELS.astype(bool), threshold=0.7)
  # c0 (2,0,0) F1=1; c1 (0,1,0) 0; c2 (0,0,1) 0. Samples: 1, 0 (empty), 2/4. Exact: rows 0, 1.
  assert m["macro_f1"] == pytest.approx(1 / 3)
  assert m["micro_f1"] == pytest.approx(4 / 6)
  assert m["samples_f1"] == pytest.approx((1 + 0 + 0.5) / 3)
  assert m["exact_match"] == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="threshold"):
    metrics.multilabel_metrics(_ML_LOGITS, _ML_LABELS, threshold=1.0)


def test_multilabel_all_empty_is_zero():
  m = metrics.multilabel_metrics(-np.ones((2, 3)), np.zeros((2, 3), np.uint8))
  assert m["micro_f1"] == 0.0 and m["macro_f1"] == 0.0 and m["samples_f1"] == 0.0
  assert m["exact_match"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multilabel_matches_sklearn(seed):
  skm = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(seed)
  n, c = 80, 7
  labels = (rng.random((n, c)) < 0.25).astype(np.uint8)
  labels[:5] = 0  # samples with no true labels
  labels[:, 0] = 0  # a class with no true labels
  logits = rng.normal(size=(n, c)) + 1.5 * (labels - 0.5)
  logits[:3] = -5.0  # some empty-and-unpredicted samples
  logits[:, 0] = -5.0  # a class neither true nor predicted
  threshold = 0.4 if seed == 2 else 0.5
  pred = (1.0 / (1.0 + np.exp(-logits)) > threshold).astype(np.uint8)
  m = metrics.multilabel_metrics(logits, labels, threshold=threshold)
  for avg in ("micro", "macro", "samples"):
    expected = skm.f1_score(labels, pred, average=avg, zero_division=0)
    assert m[f"{avg}_f1"] == pytest.approx(expected, abs=1e-12), avg
  assert m["exact_match"] == pytest.approx(skm.accuracy_score(labels, pred))


def test_multilabel_weights_mask_ignores_padding():
  rng = np.random.default_rng(3)
  pad_logits = rng.normal(size=(4, 3)) * 10
  pad_labels = rng.integers(0, 2, size=(4, 3)).astype(np.uint8)
  logits = np.concatenate([_ML_LOGITS, pad_logits])
  labels = np.concatenate([_ML_LABELS, pad_labels])
  weights = np.array([1, 1, 1, 0, 0, 0, 0], np.float32)
  assert metrics.multilabel_metrics(logits, labels, weights=weights) == (
    metrics.multilabel_metrics(_ML_LOGITS, _ML_LABELS)
  )


# ------------------------------------------------------------------------------------------------
# Multiclass.
# ------------------------------------------------------------------------------------------------


def _softmax(x):
  # Same formula as the library so the oracle sees bit-identical probabilities (ties included).
  z = x - x.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def test_multiclass_hand_computed():
  logits = np.array(
    [[3.0, 0.0, 0.0, -9.0], [0.0, 1.0, 2.0, -9.0], [0.0, 0.0, 5.0, -9.0], [0.0, 4.0, 1.0, -9.0]]
  )
  labels = np.array([0, 1, 2, 2])
  # Predictions [0, 2, 2, 1]. (tp, fp, fn): c0 (1,0,0) F1=1; c1 (0,1,1) 0; c2 (1,1,1) 1/2.
  # Class 3 is neither true nor predicted, so it is not averaged in.
  m = metrics.multiclass_metrics(logits, labels)
  assert m["accuracy"] == pytest.approx(0.5)
  assert m["macro_f1"] == pytest.approx(0.5)
  assert 0.0 <= m["auroc"] <= 1.0


def test_multiclass_auroc_perfect_and_reversed():
  labels = np.array([0, 0, 1, 1, 2, 2])
  logits = 5.0 * np.eye(3)[labels]
  assert metrics.multiclass_metrics(logits, labels)["auroc"] == pytest.approx(1.0)
  assert metrics.multiclass_metrics(-logits, labels)["auroc"] == pytest.approx(0.0)


def test_multiclass_auroc_nan_with_one_class():
  m = metrics.multiclass_metrics(np.random.default_rng(0).normal(size=(5, 3)), np.full(5, 2))
  assert "auroc" in m and math.isnan(m["auroc"])
  assert not math.isnan(m["accuracy"]) and not math.isnan(m["macro_f1"])


@pytest.mark.parametrize("seed,quantize", [(0, False), (1, False), (2, True)])
def test_multiclass_matches_sklearn(seed, quantize):
  skm = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(seed)
  n, c = 90, 5
  labels = rng.integers(0, c - 1, size=n)  # class 4 never occurs in the labels
  logits = rng.normal(size=(n, c)) + 1.0 * np.eye(c)[labels]
  if quantize:  # coarse logits -> many tied probabilities
    logits = np.round(logits)
  m = metrics.multiclass_metrics(logits, labels)
  pred = logits.argmax(-1)
  assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
  assert m["macro_f1"] == pytest.approx(
    skm.f1_score(labels, pred, average="macro", zero_division=0), abs=1e-12
  )
  expected_auroc = skm.roc_auc_score(
    labels, _softmax(logits), multi_class="ovo", average="macro", labels=np.arange(c)
  )
  assert m["auroc"] == pytest.approx(expected_auroc, abs=1e-12)


def test_multiclass_weights_mask_ignores_padding():
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(20, 4))
  labels = rng.integers(0, 4, size=20)
  weights = np.ones(20)
  weights[15:] = 0
  garbage_logits = logits.copy()
  garbage_logits[15:] = 100.0 * rng.normal(size=(5, 4))
  garbage_labels = labels.copy()
  garbage_labels[15:] = 0
  got = metrics.multiclass_metrics(garbage_logits, garbage_labels, weights=jnp.asarray(weights))
  assert got == metrics.multiclass_metrics(logits[:15], labels[:15])


def test_multiclass_rejects_bad_labels_and_weights():
  with pytest.raises(ValueError, match="labels"):
    metrics.multiclass_metrics(np.zeros((2, 3)), np.array([0, 3]))
  with pytest.raises(ValueError, match="0/1"):
    metrics.multiclass_metrics(np.zeros((2, 3)), np.array([0, 1]), weights=np.array([0.5, 1]))
  with pytest.raises(ValueError, match="no valid rows"):
    metrics.multiclass_metrics(np.zeros((2, 3)), np.array([0, 1]), weights=np.zeros(2))
  with pytest.raises(ValueError, match="NaN"):
    metrics.multiclass_metrics(np.full((2, 3), np.nan), np.array([0, 1]))


# ------------------------------------------------------------------------------------------------
# Binary.
# ------------------------------------------------------------------------------------------------


def test_binary_auroc_with_ties_hand_computed():
  scores = np.array([0.1, 0.4, 0.4, 0.8])
  labels = np.array([0, 0, 1, 1])
  # Positive/negative pairs: (0.4 vs 0.1) 1, (0.4 vs 0.4) 1/2, (0.8 vs 0.1) 1, (0.8 vs 0.4) 1.
  m = metrics.binary_metrics(scores - 0.3, labels)
  assert m["auroc"] == pytest.approx(3.5 / 4)
  # Predictions (logit > 0): [0, 1, 1, 1] -> acc 3/4; F1 class 1 = 4/5, class 0 = 2/3.
  assert m["accuracy"] == pytest.approx(0.75)
  assert m["macro_f1"] == pytest.approx((4 / 5 + 2 / 3) / 2)
  assert metrics.binary_metrics(np.zeros(4), labels)["auroc"] == pytest.approx(0.5)


def test_binary_two_column_logits_match_single_logit():
  rng = np.random.default_rng(5)
  s = rng.normal(size=30)
  labels = rng.integers(0, 2, size=30).astype(bool)
  two = np.stack([np.zeros(30), s], axis=-1)
  assert metrics.binary_metrics(two, labels) == metrics.binary_metrics(s, labels)
  assert metrics.binary_metrics(s[:, None], labels) == metrics.binary_metrics(s, labels)


def test_binary_auroc_nan_with_one_class():
  assert math.isnan(metrics.binary_metrics(np.arange(4.0), np.ones(4, int))["auroc"])


@pytest.mark.parametrize("seed", [0, 1])
def test_binary_matches_sklearn(seed):
  skm = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(seed)
  n = 120
  labels = rng.integers(0, 2, size=n)
  logits = rng.integers(-3, 4, size=(n, 2)).astype(np.float64)  # heavy ties
  logits[:, 1] += labels
  m = metrics.binary_metrics(logits, labels)
  pred = logits.argmax(-1)
  assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
  assert m["macro_f1"] == pytest.approx(skm.f1_score(labels, pred, average="macro"), abs=1e-12)
  expected = skm.roc_auc_score(labels, _softmax(logits)[:, 1])
  assert m["auroc"] == pytest.approx(expected, abs=1e-12)


def test_binary_weights_mask_ignores_padding():
  scores = np.array([0.1, 0.4, 0.4, 0.8, 9.0, -9.0])
  labels = np.array([0, 0, 1, 1, 0, 1])
  weights = np.array([1, 1, 1, 1, 0, 0])
  assert metrics.binary_metrics(scores, labels, weights=weights) == (
    metrics.binary_metrics(scores[:4], labels[:4])
  )


# ------------------------------------------------------------------------------------------------
# Dispatch.
# ------------------------------------------------------------------------------------------------


def test_compute_metrics_dispatch_and_selection_metric():
  w = np.array([1, 1, 1, 0])
  ml = metrics.compute_metrics(
    "multilabel",
    np.vstack([_ML_LOGITS, np.ones(3)]),
    np.vstack([_ML_LABELS, np.zeros(3, np.uint8)]),
    weights=w,
  )
  assert ml == metrics.multilabel_metrics(_ML_LOGITS, _ML_LABELS)
  mc = metrics.compute_metrics("multiclass", np.eye(3)[[0, 1, 2, 0]], np.array([0, 1, 2, 1]), w)
  assert mc["accuracy"] == 1.0
  b = metrics.compute_metrics("binary", np.array([-1.0, 1.0]), np.array([0, 1]))
  assert b["accuracy"] == 1.0 and b["auroc"] == 1.0
  with pytest.raises(ValueError, match="task_type"):
    metrics.compute_metrics("regression", np.zeros(2), np.zeros(2))
  assert metrics.default_selection_metric("multilabel") == "macro_f1"
  assert metrics.default_selection_metric("multiclass") == "accuracy"
  assert metrics.default_selection_metric("binary") == "accuracy"
  for task in metrics.TASK_TYPES:
    assert metrics.default_selection_metric(task) in (ml if task == "multilabel" else b)


# ------------------------------------------------------------------------------------------------
# MetricWriter.
# ------------------------------------------------------------------------------------------------


def test_metric_writer_round_trip(tmp_path):
  workdir = tmp_path / "run"
  with metrics.MetricWriter(workdir) as w:
    w.write(1, loss=np.float32(0.5), acc=jnp.asarray(0.25), count=3)
    w.write(np.int64(2), loss=jnp.float32(float("nan")), flag=True)
  # A second writer appends.
  w = metrics.MetricWriter(workdir)
  w.write(3, loss=1.5)
  w.close()
  w.close()  # idempotent
  with pytest.raises(ValueError, match="closed"):
    w.write(4, loss=1.0)

  records = metrics.read_metrics(workdir / "metrics.jsonl")
  assert [r["step"] for r in records] == [1, 2, 3]
  assert records[0] == {"step": 1, "loss": 0.5, "acc": 0.25, "count": 3.0}
  assert all(isinstance(v, float) for r in records for k, v in r.items() if k != "step")
  assert math.isnan(records[1]["loss"]) and records[1]["flag"] == 1.0
  assert metrics.read_metrics(workdir) == metrics.read_metrics(w.path)  # directory form


def test_metric_writer_rejects_non_scalars_and_skips_truncated_line(tmp_path):
  w = metrics.MetricWriter(tmp_path, filename="m.jsonl")
  with pytest.raises(TypeError, match="scalar"):
    w.write(0, loss=np.ones(3))
  with pytest.raises(ValueError, match="reserved"):
    w.write(0, step=1.0)
  w.write(0, loss=1.0)
  w.close()
  with open(tmp_path / "m.jsonl", "a") as f:
    f.write('{"step": 1, "lo')  # a crash mid-write
  assert metrics.read_metrics(tmp_path / "m.jsonl") == [{"step": 0, "loss": 1.0}]
  with open(tmp_path / "m.jsonl", "a") as f:
    f.write('\n{"step": 2}\n')
  with pytest.raises(json.JSONDecodeError):
    metrics.read_metrics(tmp_path / "m.jsonl")


# ------------------------------------------------------------------------------------------------
# Progress.
# ------------------------------------------------------------------------------------------------


class _FakeTTY(io.StringIO):
  def isatty(self):
    return True


def test_progress_plain_lines_when_not_a_tty():
  out = io.StringIO()
  with metrics.Progress(10, "train", log_every=4, file=out) as p:
    for i in range(10):
      p.update(loss=jnp.float32(1.0 / (i + 1)))
  lines = out.getvalue().strip().splitlines()
  assert len(lines) == 3  # steps 4, 8 and the final 10
  assert lines[0].startswith("train: 4/10 (40%)") and "loss=0.25" in lines[0]
  assert "eta" in lines[0] and "it/s" in lines[0]
  assert lines[-1].startswith("train: 10/10 (100%)") and "loss=0.1" in lines[-1]


def test_progress_jumps_and_unknown_total():
  out = io.StringIO()
  p = metrics.Progress(None, "eval", log_every=5, file=out)
  p.update(7)
  p.update(2)
  p.close()
  p.update(1)  # ignored after close
  lines = out.getvalue().strip().splitlines()
  assert [line.split()[1] for line in lines] == ["7", "9"]


def test_progress_tqdm_bar_on_tty():
  out = _FakeTTY()
  with metrics.Progress(5, "train", file=out) as p:
    for _ in range(5):
      p.update(loss=0.123456, lr="warmup")
  text = out.getvalue()
  assert "train" in text and "5/5" in text and "loss=0.1235" in text and "lr=warmup" in text


def test_progress_disabled_writes_nothing():
  out = _FakeTTY()
  with metrics.Progress(5, "train", enabled=False, file=out) as p:
    p.update(5, loss=1.0)
  assert out.getvalue() == ""


# ------------------------------------------------------------------------------------------------
# check_finite.
# ------------------------------------------------------------------------------------------------


def test_check_finite():
  metrics.check_finite({"loss": 1.0, "aux": jnp.float32(2.0), "n": 3, "v": np.ones(3)}, step=5)
  with pytest.raises(metrics.NonFiniteError, match=r"step 7\b.*loss=nan.*aux=inf") as exc:
    metrics.check_finite(
      {"loss": jnp.float32(float("nan")), "ok": 0.5, "aux": np.float64(np.inf)}, step=7
    )
  assert isinstance(exc.value, ValueError)
  assert exc.value.step == 7 and exc.value.names == ("loss", "aux")
  with pytest.raises(ValueError, match="step 3: grad_norm"):
    raise metrics.NonFiniteError(3, ["grad_norm"])
