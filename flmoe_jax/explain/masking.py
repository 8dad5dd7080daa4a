"""The masking operator: what "absent" means, shared by faithfulness, the probes and pair masking.

A token (or patch) is made absent by replacing its *projected* feature vector (the experts' input) by a fill
vector: the train-split mean of its modality pushed through the same checkpoint's projection (docs/method.md 4.2; the
projection is affine, so this equals the mean of the projected train features), or zero. Attention masks are
not changed: masked tokens stay in the sequence, as in the reference.

The probes can also play the *marginal* (interventional) game: an absent token takes the token at the same
position of a reference training example, and the value is averaged over K references (`reference_fills`;
shapiq's `MarginalImputer`). Its interactions depend on the model only where the data lives, not on how the
model extrapolates to the mean vector (docs/probes.md, "Fill").
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flmoe_jax import choices
from flmoe_jax.errors import FlmoeError

Array = jax.Array
FILL_MODES = choices.FILL_MODES


def fill_vectors(
  model,
  means: Sequence[np.ndarray] | None,
  mode: str = "mean",
  *,
  error: type[FlmoeError] = FlmoeError,
) -> list[Array]:
  """Projected fill vector per modality.

  Args:
    model: an FLI2MoE or DenseTransformer (anything with `project_means` and `input_dims`).
    means: per modality, the store's train-split raw mean [D_m] (`FeatureStore.means()`); may be
      None for the zero fill.
    mode: `mean` (projected mean) or `zero`.
    error: the error type raised on a bad mode or missing means (the caller's stage).

  Returns:
    Per modality, a fill vector [H].
  """
  if mode not in FILL_MODES:
    raise error(f"fill {mode!r} not in {FILL_MODES}")
  if means is None:
    if mode == "mean":
      raise error("fill='mean' needs the store's means= (FeatureStore.means())")
    means = [np.zeros((d,), np.float32) for d in model.input_dims]
  projected = model.project_means(means)
  if mode == "zero":
    return [jnp.zeros_like(p) for p in projected]
  return projected


def reference_fills(
  model,
  xs: Sequence[np.ndarray],
  masks: Sequence[np.ndarray],
  means: Sequence[np.ndarray],
) -> list[Array]:
  """Per-position fills from K reference examples: the marginal game's "absent".

  Args:
    model: an FLI2MoE or DenseTransformer.
    xs: per modality, the references' raw features [K, T_m, D_m] (rows of the train split).
    masks: per modality, bool [K, T_m]: where a reference has padding, its position takes the mean fill.
    means: per modality, the train-split raw mean [D_m] (`FeatureStore.means()`).

  Returns:
    Per modality, projected reference tokens [K, T_m, H].
  """
  hs = model.project([jnp.asarray(x, jnp.float32) for x in xs])
  mean = fill_vectors(model, means, "mean")
  return [jnp.where(jnp.asarray(m, bool)[..., None], h, f) for h, m, f in zip(hs, masks, mean)]


def apply_fill(hs: Sequence[Array], keep: Sequence[Array], fills: Sequence[Array]) -> list[Array]:
  """Replaces the tokens where `keep` is False by the fill vector of their modality.

  Args:
    hs: per modality, projected features [..., T_m, H].
    keep: per modality, bool [..., T_m] (broadcastable): True = present, False = filled.
    fills: per modality, [H], or anything that broadcasts against hs (per-position fills
      [..., T_m, H], as the references of the marginal game, placed by the caller).

  Returns:
    Per modality, [..., T_m, H] (broadcast shape of hs and keep).
  """
  return [
    jnp.where(k[..., None], h, f.astype(h.dtype)) for h, k, f in zip(hs, keep, fills, strict=True)
  ]


def candidate_masks(masks: Sequence[Array], kinds: Sequence[str]) -> list[Array]:
  """Tokens that may be attributed, masked or act as players: valid ones, minus position 0 of text.

  For `tokens` modalities (text-like) the first token is the special `<s>`/`[CLS]` token: the reference
  excludes it from normalisation and from the masking candidates (docs/method.md 4.1). Padding is never a candidate.

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
