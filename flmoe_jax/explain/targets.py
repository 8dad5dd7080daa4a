"""Targets and scores (docs/method.md 4.3): which class an explanation or a probe is about, and how it is scored.

* multiclass / binary: target c* = argmax of the clean logits (or the true label); score = logit of c*
  (for attribution) or its softmax probability (for faithfulness).
* multilabel: target set Y* = {c : sigmoid(logit_c) >= 0.5}, or {argmax} if empty (or the true labels);
  score = mean over Y* of the logits, or of the sigmoid probabilities.
A target is a [B, C] 0/1 float mask so that both cases share one code path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flmoe_jax.errors import FlmoeError

Array = jax.Array
TARGET_SOURCES = ("pred", "true")
SCORES = ("logit", "prob", "logodds", "logprob")


def target_mask(
  logits: Array, task_type: str, *, source: str = "pred", labels: Array | None = None
) -> Array:
  """The target of each example as a [B, C] float 0/1 mask.

  Args:
    logits: clean logits [B, C].
    task_type: multilabel | multiclass | binary.
    source: `pred` (the model's own prediction, the reference default) or `true` (ground truth).
    labels: [B] int or [B, C] multi-hot; needed for `true`.

  Returns:
    float32 [B, C].
  """
  if source not in TARGET_SOURCES:
    raise FlmoeError(f"target source {source!r} not in {TARGET_SOURCES}")
  c = logits.shape[-1]
  if source == "true":
    if labels is None:
      raise FlmoeError("target source 'true' needs labels")
    if task_type == "multilabel":
      t = jnp.asarray(labels, jnp.float32)
      empty = t.sum(-1, keepdims=True) == 0
      return jnp.where(empty, jax.nn.one_hot(jnp.argmax(logits, -1), c), t)
    return jax.nn.one_hot(jnp.asarray(labels), c, dtype=jnp.float32)
  if task_type == "multilabel":
    t = (logits >= 0).astype(jnp.float32)  # sigmoid(l) >= 0.5  <=>  l >= 0
    empty = t.sum(-1, keepdims=True) == 0
    return jnp.where(empty, jax.nn.one_hot(jnp.argmax(logits, -1), c), t)
  return jax.nn.one_hot(jnp.argmax(logits, -1), c, dtype=jnp.float32)


def target_score(logits: Array, target: Array, task_type: str, *, score: str = "logit") -> Array:
  """Score of the target: [..., C] logits and [..., C] (broadcastable) target -> [...].

  `logit`: mean target logit. `prob`: softmax probability of the target class (multiclass/binary) or mean
  sigmoid probability over the target set (multilabel). `logodds`: log-odds of the target,
  l_c - logsumexp of the other classes (multiclass/binary), or the mean target logit (multilabel,
  where each logit is its sigmoid's log-odds). `logprob`: log of the target's probability: log
  sigmoid of the log-odds (multiclass/binary; log-softmax, without its rounding) or log-sigmoid of
  each target logit (multilabel, the mean over the target set).

  Softmax ignores a shift common to all classes, so under cross-entropy the common part of the logits
  is never trained: `logit` carries it, the other three do not. Near certainty `prob` rounds: a
  probability of 1 - 1e-9 is 1.0 in float32, and differences of such probabilities are noise.
  `logprob` has the same saturating shape (log p ~ p - 1 near 1) without the rounding (it returns
  -1e-9 itself); `logodds` does not saturate at all.
  """
  if score not in SCORES:
    raise FlmoeError(f"score {score!r} not in {SCORES}")
  logits = logits.astype(jnp.float32)
  if score == "logit" or (score == "logodds" and task_type == "multilabel"):
    vals = logits
  elif score in ("logodds", "logprob") and task_type != "multilabel":
    others = jax.nn.logsumexp(jnp.where(target > 0, -jnp.inf, logits), axis=-1, keepdims=True)
    vals = logits - others
    if score == "logprob":
      # log p = log sigmoid(log-odds): near certainty -softplus(-lo) keeps 1 - p = 1e-9 as
      # -1e-9, where log_softmax's sum of exponentials rounds to 1 in float32 and gives 0.
      vals = jax.nn.log_sigmoid(vals)
  elif score == "logprob":
    vals = jax.nn.log_sigmoid(logits)
  elif task_type == "multilabel":
    vals = jax.nn.sigmoid(logits)
  else:
    vals = jax.nn.softmax(logits, axis=-1)
  return (vals * target).sum(-1) / jnp.maximum(target.sum(-1), 1.0)
