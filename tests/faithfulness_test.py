"""Top-K% masking faithfulness: budgets, selections, the K = 100% identities, chunking, results."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_fli2moe
from flax import nnx

from flmoe_jax.explain import (
  ExplainError,
  FaithfulnessResult,
  MaskingOptions,
  attribute,
  budget,
  faithfulness,
  masking,
  targets,
  topk_mask,
)
from flmoe_jax.models import DenseTransformer, ModelConfig

KINDS = ("tokens", "patches")
LENS = (6, 4)
DIMS = (5, 4)
MEANS = [np.full(5, 0.3, np.float32), np.full(4, -0.2, np.float32)]


def test_budget_matches_the_reference_counts():
  n = jnp.asarray([196, 196, 196, 196, 196])
  got = [int(budget(n[:1], k)[0]) for k in (5, 10, 15, 20, 25)]
  assert got == [10, 20, 30, 40, 49]  # docs/method.md 4.2's example
  assert int(budget(jnp.asarray([1]), 5)[0]) == 1  # at least one token
  assert int(budget(jnp.asarray([0]), 5)[0]) == 0  # nothing to select
  assert int(budget(jnp.asarray([20]), 15)[0]) == 3  # exact products are not rounded up
  assert int(budget(jnp.asarray([7]), 100)[0]) == 7


def test_topk_mask_selects_the_best_candidates_only():
  scores = jnp.asarray([[0.9, 0.1, 0.8, 0.7, 0.2, 0.95]])
  cand = jnp.asarray([[False, True, True, True, True, False]])
  sel = np.asarray(topk_mask(scores, cand, 50))[0]  # 4 candidates -> m = 2
  np.testing.assert_array_equal(sel, [False, False, True, True, False, False])
  # Ties are broken by position, so the selection is deterministic.
  sel = np.asarray(topk_mask(jnp.zeros((1, 6)), cand, 25))[0]
  np.testing.assert_array_equal(sel, [False, True, False, False, False, False])


@pytest.fixture(scope="module")
def model():
  return tiny_fli2moe(DIMS, num_classes=3, seed=1, identical_expert_init=False)


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  xs = [rng.normal(size=(3, t, d)).astype(np.float32) for t, d in zip(LENS, DIMS)]
  masks = [np.arange(LENS[0])[None] < np.array([[6], [4], [3]]), np.ones((3, LENS[1]), bool)]
  return {
    "x": xs,
    "mask": masks,
    "label": np.array([0, 1, 2], np.int32),
    "weight": np.array([1, 1, 0], np.float32),
  }  # row 2 is padding


@pytest.fixture(scope="module")
def attr(model, batch):
  return attribute(model, batch, kinds=KINDS)


def _p(model, hs, masks, target):
  out = model.forward_projected(hs, masks)
  mix = targets.target_score(out.logits, target, "multiclass", score="prob")
  exp = targets.target_score(out.expert_logits, target[:, None], "multiclass", score="prob")
  return np.asarray(mix), np.asarray(exp)


def test_k100_identities_and_chunking(model, batch, attr):
  key = jax.random.key(0)
  res = faithfulness(
    model,
    batch,
    attr,
    key=key,
    means=MEANS,
    options=MaskingOptions((10, 100), repeats=3, steps_per_call=7),
  )
  assert res.comp.shape == (3, 5, 2, 2) and res.views == attr.views
  # K = 100%: keeping every candidate fills nothing -> zero drop, identified and random.
  np.testing.assert_allclose(res.suff[..., 1], 0.0, atol=1e-6)
  np.testing.assert_allclose(res.suff_random[..., 1], 0.0, atol=1e-6)
  # ... and filling every candidate gives p(x) - p(all candidates filled), on every output.
  hs = model.project([jnp.asarray(x) for x in batch["x"]])
  masks = [jnp.asarray(m) for m in batch["mask"]]
  cand = masking.candidate_masks(masks, KINDS)
  fills = masking.fill_vectors(model, MEANS, "mean")
  p0_mix, p0_exp = _p(model, hs, masks, attr.target)
  p1_mix, p1_exp = _p(model, masking.apply_fill(hs, [~c for c in cand], fills), masks, attr.target)
  drop_mix, drop_exp = p0_mix - p1_mix, p0_exp - p1_exp
  for v, e in enumerate(attr.view_experts):
    own = drop_mix if e < 0 else drop_exp[:, e]
    np.testing.assert_allclose(res.comp[:, v, 0, 1], own, atol=1e-5)
    np.testing.assert_allclose(res.comp[:, v, 1, 1], drop_mix, atol=1e-5)
    np.testing.assert_allclose(res.comp_random[:, v, 0, 1], own, atol=1e-5)
  np.testing.assert_allclose(res.p_clean[:, -1, 0], p0_mix, atol=1e-6)
  # One call, or chunks of 7 variants: the same numbers.
  one = faithfulness(
    model,
    batch,
    attr,
    key=key,
    means=MEANS,
    options=MaskingOptions((10, 100), repeats=3, steps_per_call=None),
  )
  for name in ("comp", "suff", "comp_random", "suff_random"):
    np.testing.assert_allclose(getattr(one, name), getattr(res, name), atol=1e-6)
  # Another key changes only the random control.
  other = faithfulness(
    model,
    batch,
    attr,
    key=jax.random.key(1),
    means=MEANS,
    options=MaskingOptions((10, 100), repeats=3, steps_per_call=7),
  )
  np.testing.assert_allclose(other.comp, res.comp, atol=1e-6)
  assert not np.allclose(other.comp_random[..., 0], res.comp_random[..., 0])


def test_raw_maps_on_a_dense_model():
  # Raw maps: one-hot on text token 2; the image map is flat, so ties pick patch 0. At K = 20%
  # (5 text candidates, 4 patches: m = 1 each) comprehensiveness fills exactly those two tokens.
  dense = DenseTransformer(
    ModelConfig(input_dims=DIMS, num_classes=2, hidden_dim=8, num_heads=2, num_layers=1),
    rngs=nnx.Rngs(0),
  )
  hs = [jnp.asarray(np.random.default_rng(2).normal(size=(3, t, 8)), jnp.float32) for t in LENS]
  masks = [jnp.ones((3, t), bool) for t in LENS]
  one_hot = [jnp.zeros((3, LENS[0])).at[:, 2].set(1.0), jnp.zeros((3, LENS[1]))]
  res = faithfulness(
    dense,
    (hs, masks),
    one_hot,
    key=jax.random.key(0),
    options=MaskingOptions((20,), fill="zero", repeats=4),
    kinds=KINDS,
    task_type="multiclass",
  )
  assert res.views == ("mixture",) and res.comp.shape == (3, 1, 2, 1)
  target = targets.target_mask(dense.forward_projected(hs, masks).logits, "multiclass")
  keep = [
    jnp.ones((3, LENS[0]), bool).at[:, 2].set(False),
    jnp.ones((3, LENS[1]), bool).at[:, 0].set(False),
  ]
  zeros = [jnp.zeros(8), jnp.zeros(8)]
  p0, _ = _p(dense, hs, masks, target)
  p1, _ = _p(dense, masking.apply_fill(hs, keep, zeros), masks, target)
  np.testing.assert_allclose(res.comp[:, 0, 0, 0], p0 - p1, atol=1e-6)
  with pytest.raises(ExplainError, match="views"):
    faithfulness(
      dense,
      (hs, masks),
      [jnp.stack([m, m], 1) for m in one_hot],
      key=jax.random.key(0),
      options=MaskingOptions((20,), fill="zero"),
      kinds=KINDS,
      task_type="multiclass",
    )


def test_result_summary_concat_and_json(model, batch, attr):
  res = faithfulness(
    model,
    batch,
    attr,
    key=jax.random.key(3),
    means=MEANS,
    options=MaskingOptions((10, 20), repeats=2, steps_per_call=None),
  )
  assert res.num_examples == 2  # the padding row is excluded
  s = res.summary()
  assert set(s) == set(attr.views) and set(s["syn"]) == {"own", "mixture"}
  d = s["syn"]["own"]
  v = res.valid
  np.testing.assert_allclose(d["comp"], 100 * res.comp[v, 2, 0].mean(0), rtol=1e-5)
  np.testing.assert_allclose(d["comp_gap"], np.subtract(d["comp"], d["comp_random"]), rtol=1e-6)
  np.testing.assert_allclose(d["suff_gap"], np.subtract(d["suff_random"], d["suff"]), rtol=1e-6)
  assert d["aopc"]["comp"] == pytest.approx(np.mean(d["comp"]))
  # Two Ks: the trapezoid area over [10, 20] divided by 10 is the mean of the two values too.
  assert d["aopc_trapezoid"]["comp"] == pytest.approx(np.mean(d["comp"]))
  both = FaithfulnessResult.concat([res, res])
  assert both.comp.shape[0] == 6 and both.num_examples == 4
  back = FaithfulnessResult.from_json(res.to_json())
  np.testing.assert_allclose(back.comp, res.comp)
  assert back.views == res.views and back.ks == res.ks
  bad = json.loads(res.to_json())
  bad["version"] = 99
  with pytest.raises(ExplainError, match="version"):
    FaithfulnessResult.from_json(json.dumps(bad))


def test_bad_input(model, batch, attr):
  key = jax.random.key(0)
  for ks in ((0,), (101,), (-5, 10), (10, 10)):
    with pytest.raises(ExplainError, match="K"):
      MaskingOptions(ks)
  with pytest.raises(ExplainError, match="repeats"):
    MaskingOptions((10,), repeats=0)
  with pytest.raises(ExplainError, match="steps_per_call"):
    MaskingOptions((10,), steps_per_call=0)
  with pytest.raises(ExplainError, match="fill"):
    MaskingOptions((10,), fill="blur")
  with pytest.raises(ExplainError, match="means"):
    faithfulness(model, batch, attr, key=key, options=MaskingOptions((10,)))
  with pytest.raises(TypeError):
    faithfulness(model, batch, attr, means=MEANS)  # the key is mandatory


def test_trapezoid_aopc_weighs_the_ks_by_their_spacing():
  from flmoe_jax.explain.topk_faithfulness import trapezoid_aopc

  # K = 5, 10, 50 with values 1, 2, 10: area = 5 * 1.5 + 40 * 6 = 247.5 over 45 (mean AOPC: 4.33).
  assert trapezoid_aopc([1.0, 2.0, 10.0], [5, 10, 50]) == pytest.approx(247.5 / 45)
  assert trapezoid_aopc([3.0], [20]) == 3.0
