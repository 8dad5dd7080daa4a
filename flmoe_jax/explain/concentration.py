"""Concentration and interaction-specificity of importance maps (docs/method.md 4.4, claim C1).

Concentration, per view, modality and sample, on the normalised non-negative map a_t over the
candidate tokens (p_t = a_t / sum a; an all-zero map counts as uniform), for the min-max normalised
map and (entropy and Gini) for the unnormalised one:

* normalised entropy H(p) / log n (1 = flat, 0 = one token; n = 1 gives 0);
* Gini coefficient sum_ij |a_i - a_j| / (2 n sum a) (0 = flat, 1 - 1/n = one token);
* top-K% mass: the share of sum a on the top-m tokens (m as in masking, `faithfulness.budget`).

Specificity, between two views (two experts, or a dense-baseline map and an expert/mixture map):

* top-K% Jaccard overlap |A & B| / |A | B| of the selected token sets (lower = more specific);
* cosine similarity of the two maps over the candidates (0 if either map is all zero).

Modality mass share: per view, the share of the raw (unnormalised, comparable across modalities)
importance that lies on each modality's candidates: uni_text should sit on text, uni_image on the
image, syn and red on both.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from flmoe_jax.explain.attribution import Attribution, ExplainError
from flmoe_jax.explain.config import check_ks
from flmoe_jax.explain.topk_faithfulness import topk_mask

Array = jax.Array
_TINY = 1e-12


def _dist(a: Array, cand: Array) -> tuple[Array, Array]:
  """(p, n): the map as a distribution over the candidates (uniform when it sums to 0)."""
  a = jnp.where(cand, jnp.maximum(a, 0.0), 0.0)
  n = cand.sum(-1)
  s = a.sum(-1, keepdims=True)
  uniform = cand / jnp.maximum(n, 1)[..., None]
  return jnp.where(s > _TINY, a / jnp.maximum(s, _TINY), uniform), n


def normalised_entropy(a: Array, cand: Array) -> Array:
  """H(p) / log n over the candidates. a, cand: [..., T] -> [...]."""
  p, n = _dist(a, cand)
  h = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1)
  return jnp.where(n > 1, h / jnp.log(jnp.maximum(n, 2).astype(h.dtype)), 0.0)


def gini(a: Array, cand: Array) -> Array:
  """Gini coefficient of the candidates' values. a, cand: [..., T] -> [...] (0 for flat maps)."""
  p, n = _dist(a, cand)
  pair = cand[..., :, None] & cand[..., None, :]
  diff = jnp.where(pair, jnp.abs(p[..., :, None] - p[..., None, :]), 0.0).sum((-1, -2))
  return jnp.where(n > 0, diff / (2.0 * jnp.maximum(n, 1)), 0.0)


def top_mass(a: Array, cand: Array, k: float) -> Array:
  """Share of the map's mass on its top-K% candidates. [..., T] -> [...]."""
  p, _ = _dist(a, cand)
  return jnp.where(topk_mask(a, cand, k), p, 0.0).sum(-1)


def jaccard(a: Array, b: Array, cand: Array, k: float) -> Array:
  """Top-K% Jaccard overlap of two maps on the same candidates. [..., T] -> [...]."""
  sa, sb = topk_mask(a, cand, k), topk_mask(b, cand, k)
  inter = (sa & sb).sum(-1)
  union = (sa | sb).sum(-1)
  return jnp.where(union > 0, inter / jnp.maximum(union, 1), 0.0)


def cosine(a: Array, b: Array, cand: Array) -> Array:
  """Cosine similarity over the candidates. [..., T] -> [...] (0 if either is all zero)."""
  a, b = jnp.where(cand, a, 0.0), jnp.where(cand, b, 0.0)
  na, nb = jnp.linalg.norm(a, axis=-1), jnp.linalg.norm(b, axis=-1)
  return jnp.where((na > _TINY) & (nb > _TINY), (a * b).sum(-1) / (na * nb + _TINY), 0.0)


@functools.partial(jax.jit, static_argnames=("ks",))
def _stats_jit(maps, raw, cand, *, ks):
  ent, gin, mass, share, ent_raw, gin_raw = [], [], [], [], [], []
  for mp, r, c in zip(maps, raw, cand, strict=True):
    cv = c[:, None, :]  # [B, 1, T] against maps [B, V, T]
    ent.append(normalised_entropy(mp, cv))
    gin.append(gini(mp, cv))
    mass.append(jnp.stack([top_mass(mp, cv, k) for k in ks], axis=-1))
    # The same on the unnormalised map: min-max normalisation sets each map's smallest value to 0,
    # which concentrates a flat map with one low token; C1 must hold on both.
    ent_raw.append(normalised_entropy(jnp.maximum(r, 0.0), cv))
    gin_raw.append(gini(jnp.maximum(r, 0.0), cv))
  tot = [jnp.where(c[:, None, :], jnp.maximum(r, 0.0), 0.0).sum(-1) for r, c in zip(raw, cand)]
  denom = sum(tot)
  share = [t / jnp.maximum(denom, _TINY) for t in tot]
  return {
    "entropy": jnp.stack(ent, axis=-1),  # [B, V, M]
    "gini": jnp.stack(gin, axis=-1),
    "top_mass": jnp.stack(mass, axis=2),  # [B, V, M, nK]
    "mass_share": jnp.stack(share, axis=-1),  # [B, V, M]
    "entropy_raw": jnp.stack(ent_raw, axis=-1),  # [B, V, M]
    "gini_raw": jnp.stack(gin_raw, axis=-1),
  }


@functools.partial(jax.jit, static_argnames=("ks",))
def _pairs_jit(maps_a, maps_b, cand, *, ks):
  jac, cos = [], []
  for ma, mb, c in zip(maps_a, maps_b, cand, strict=True):
    a = ma[:, :, None, :]  # [B, Va, 1, T]
    b = mb[:, None, :, :]  # [B, 1, Vb, T]
    cc = c[:, None, None, :]
    a, b = jnp.broadcast_arrays(a, b)
    jac.append(jnp.stack([jaccard(a, b, cc, k) for k in ks], axis=-1))  # [B, Va, Vb, nK]
    cos.append(cosine(a, b, cc))  # [B, Va, Vb]
  return {"jaccard": jnp.stack(jac, axis=3), "cosine": jnp.stack(cos, axis=-1)}


def map_statistics(attr: Attribution, ks: Sequence[float]) -> dict[str, Array]:
  """Concentration of every view of an attribution, per sample.

  Args:
    attr: an `Attribution` with V views.
    ks: budgets K in percent for the top-K% mass.

  Returns:
    {"entropy": [B, V, M], "gini": [B, V, M], "top_mass": [B, V, M, nK],
     "mass_share": [B, V, M] (rows sum to 1 over modalities), "entropy_raw" and "gini_raw":
     [B, V, M] on the unnormalised maps (negative values clipped to 0)}.
  """
  return _stats_jit(tuple(attr.maps), tuple(attr.raw), tuple(attr.candidates), ks=check_ks(ks))


def compare_maps(a: Attribution, b: Attribution, ks: Sequence[float]) -> dict[str, Array]:
  """Pairwise overlap of the views of two attributions of the same batch (or of one with itself).

  Args:
    a: attribution with Va views.
    b: attribution with Vb views, same batch and candidates.
    ks: budgets K in percent.

  Returns:
    {"jaccard": [B, Va, Vb, M, nK], "cosine": [B, Va, Vb, M]}.
  """
  for ca, cb in zip(a.candidates, b.candidates, strict=True):
    if ca.shape != cb.shape or not bool(jnp.all(ca == cb)):
      raise ExplainError("the two attributions are not of the same batch (candidates differ)")
  return _pairs_jit(tuple(a.maps), tuple(b.maps), tuple(a.candidates), ks=check_ks(ks))
