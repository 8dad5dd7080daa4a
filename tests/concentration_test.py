"""Concentration and specificity metrics against closed forms."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from flmoe_jax.explain import Attribution, ExplainError, compare_maps, map_statistics
from flmoe_jax.explain.concentration import cosine, gini, jaccard, normalised_entropy, top_mass

ALL = jnp.ones((1, 8), bool)


def test_one_hot_and_flat_maps():
  one = jnp.zeros((1, 8)).at[0, 5].set(1.0)
  flat = jnp.ones((1, 8))
  assert float(normalised_entropy(one, ALL)[0]) == pytest.approx(0.0, abs=1e-6)
  assert float(normalised_entropy(flat, ALL)[0]) == pytest.approx(1.0, abs=1e-6)
  assert float(gini(one, ALL)[0]) == pytest.approx(1 - 1 / 8, abs=1e-6)
  assert float(gini(flat, ALL)[0]) == pytest.approx(0.0, abs=1e-6)
  assert float(top_mass(one, ALL, 10)[0]) == pytest.approx(1.0)
  assert float(top_mass(flat, ALL, 25)[0]) == pytest.approx(2 / 8)  # m = 2 of 8 equal tokens
  # An all-zero map (a constant map after min-max) counts as flat.
  assert float(normalised_entropy(jnp.zeros((1, 8)), ALL)[0]) == pytest.approx(1.0, abs=1e-6)


def test_non_candidates_are_ignored():
  cand = jnp.asarray([[False, True, True, False]])
  a = jnp.asarray([[100.0, 1.0, 1.0, 100.0]])
  assert float(normalised_entropy(a, cand)[0]) == pytest.approx(1.0, abs=1e-6)
  assert float(gini(a, cand)[0]) == pytest.approx(0.0, abs=1e-6)
  # Entropy against the direct formula on the candidates.
  b = jnp.asarray([[7.0, 1.0, 3.0, 0.0]])
  p = np.array([1.0, 3.0]) / 4.0
  assert float(normalised_entropy(b, cand)[0]) == pytest.approx(
    -(p * np.log(p)).sum() / math.log(2), rel=1e-5
  )


def test_overlap_measures():
  a = jnp.asarray([[0.9, 0.8, 0.1, 0.0]])
  b = jnp.asarray([[0.0, 0.1, 0.8, 0.9]])
  c = jnp.ones((1, 4), bool)
  assert float(jaccard(a, a, c, 50)[0]) == 1.0
  assert float(jaccard(a, b, c, 50)[0]) == 0.0
  assert float(jaccard(a, jnp.asarray([[0.9, 0.0, 0.8, 0.1]]), c, 50)[0]) == pytest.approx(1 / 3)
  assert float(cosine(a, 2 * a, c)[0]) == pytest.approx(1.0, abs=1e-6)
  assert float(cosine(jnp.asarray([[1.0, 0, 0, 0]]), jnp.asarray([[0, 1.0, 0, 0]]), c)[0]) == 0.0


def _attr(maps, raw, cand):
  b = maps[0].shape[0]
  return Attribution(
    maps=tuple(maps),
    raw=tuple(raw),
    signed=None,
    candidates=tuple(cand),
    target=jnp.zeros((b, 2)),
    logits=jnp.zeros((b, 2)),
    expert_logits=jnp.zeros((b, 1, 2)),
    weights=jnp.ones((b, 1)),
    views=("a", "b"),
    view_experts=(0, 1),
    method="attn",
    kinds=("tokens", "patches"),
  )


def test_map_statistics_and_compare_maps():
  rng = np.random.default_rng(0)
  cand = [jnp.asarray(rng.random((3, 6)) > 0.3).at[:, 1].set(True), jnp.ones((3, 4), bool)]
  maps = [jnp.asarray(rng.random((3, 2, t)), jnp.float32) for t in (6, 4)]
  raw = [jnp.asarray(rng.random((3, 2, t)), jnp.float32) for t in (6, 4)]
  attr = _attr(maps, raw, cand)
  st = map_statistics(attr, (10, 50))
  assert st["entropy"].shape == (3, 2, 2) and st["top_mass"].shape == (3, 2, 2, 2)
  np.testing.assert_allclose(np.asarray(st["mass_share"]).sum(-1), 1.0, rtol=1e-5)
  text_mass = (np.asarray(raw[0]) * np.asarray(cand[0])[:, None]).sum(-1)
  total = text_mass + np.asarray(raw[1]).sum(-1)
  np.testing.assert_allclose(np.asarray(st["mass_share"])[..., 0], text_mass / total, rtol=1e-5)
  # The unnormalised maps' statistics are those of the raw maps, view by view.
  for m in range(2):
    c = cand[m][:, None, :]
    np.testing.assert_allclose(st["entropy_raw"][..., m], normalised_entropy(raw[m], c), rtol=1e-5)
    np.testing.assert_allclose(st["gini_raw"][..., m], gini(raw[m], c), rtol=1e-5)
  # Views a and b of two batches: entry [i, j] is view i of the first against view j of the second,
  # against the cosine computed here over each example's candidates.
  pairs = compare_maps(attr, _attr([x[:, ::-1] for x in maps], raw, cand), (10, 50))
  assert pairs["jaccard"].shape == (3, 2, 2, 2, 2)
  for m in range(2):
    a, b_ = np.asarray(maps[m]), np.asarray(maps[m])[:, ::-1]  # b's view j is a's view 1 - j
    cm = np.asarray(cand[m])
    for i in range(2):
      for j in range(2):
        x, y = a[:, i] * cm, b_[:, j] * cm
        want = (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)
        np.testing.assert_allclose(pairs["cosine"][:, i, j, m], want, rtol=1e-5)
        for ki, k in enumerate((10, 50)):
          want_j = jaccard(jnp.asarray(a[:, i]), jnp.asarray(b_[:, j]), cand[m], k)
          np.testing.assert_allclose(pairs["jaccard"][:, i, j, m, ki], want_j)
        if j == 1 - i:  # the same map: full overlap
          np.testing.assert_allclose(pairs["jaccard"][:, i, j, m], 1.0)
  assert float(np.asarray(pairs["jaccard"])[:, 0, 0].min()) < 1.0  # different maps do differ
  other = _attr(maps, raw, [~cand[0], cand[1]])
  with pytest.raises(ExplainError, match="same batch"):
    compare_maps(attr, other, (10,))
  with pytest.raises(ExplainError, match="K"):
    map_statistics(attr, (0,))


def test_min_max_normalisation_can_concentrate_a_flat_map():
  """Why C1 is also read on the unnormalised map: min-max sends one slightly lower token to 0."""
  raw = jnp.asarray([[[1.0, 1.0, 1.0, 0.9]] * 2])  # [B=1, V=2, T=4]
  cand = jnp.ones((1, 4), bool)
  mm = (raw - raw.min()) / (raw.max() - raw.min())
  st = map_statistics(_attr([mm, mm], [raw, raw], [cand, cand]), (25,))
  assert float(st["entropy_raw"][0, 0, 0]) > 0.99  # nearly flat
  assert float(st["entropy"][0, 0, 0]) == pytest.approx(math.log(3) / math.log(4), rel=1e-5)
