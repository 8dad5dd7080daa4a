"""The masking operator: what "absent" means, shared by faithfulness, the probes and pair masking.

A token (or patch) is made absent by replacing its *projected* feature vector (the experts' input) by a fill
vector: the train-split mean of its modality pushed through the same checkpoint's projection (SPEC 4.2; the
projection is affine, so this equals the mean of the projected train features), or zero. Attention masks are
not changed: masked tokens stay in the sequence, as in the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flmoe_jax.errors import FlmoeError

Array = jax.Array
FILL_MODES = ("mean", "zero")


def fill_vectors(model, means: Sequence[np.ndarray], mode: str = "mean") -> list[Array]:
  """Projected fill vector per modality.

  Args:
    model: an FLI2MoE or DenseTransformer (anything with `project_means`).
    means: per modality, the store's train-split raw mean [D_m] (`FeatureStore.means()`).
    mode: `mean` (projected mean) or `zero`.

  Returns:
    Per modality, a fill vector [H].
  """
  if mode not in FILL_MODES:
    raise FlmoeError(f"fill mode {mode!r} not in {FILL_MODES}")
  projected = model.project_means(means)
  if mode == "zero":
    return [jnp.zeros_like(p) for p in projected]
  return projected


def apply_fill(hs: Sequence[Array], keep: Sequence[Array], fills: Sequence[Array]) -> list[Array]:
  """Replaces the tokens where `keep` is False by the fill vector of their modality.

  Args:
    hs: per modality, projected features [..., T_m, H].
    keep: per modality, bool [..., T_m] (broadcastable): True = present, False = filled.
    fills: per modality, [H].

  Returns:
    Per modality, [..., T_m, H] (broadcast shape of hs and keep).
  """
  return [
    jnp.where(k[..., None], h, f.astype(h.dtype)) for h, k, f in zip(hs, keep, fills, strict=True)
  ]


def candidate_masks(masks: Sequence[Array], kinds: Sequence[str]) -> list[Array]:
  """Tokens that may be attributed, masked or act as players: valid ones, minus position 0 of text.

  For `tokens` modalities (text-like) the first token is the special `<s>`/`[CLS]` token: the reference
  excludes it from normalisation and from the masking candidates (SPEC 4.1). Padding is never a candidate.

  Args:
    masks: per modality, bool [B, T_m] (True = real token).
    kinds: per modality, `tokens` or `patches` (from the store manifest).

  Returns:
    Per modality, bool [B, T_m].
  """
  out = []
  for m, kind in zip(masks, kinds, strict=True):
    m = jnp.asarray(m, bool)
    if kind == "tokens":
      m = m.at[..., 0].set(False)
    out.append(m)
  return out
