"""The null-control statistics: first-place test across examples and per-example separation."""

import math

import numpy as np
import pytest

from flmoe_jax import significance
from flmoe_jax.probes import standout


def _keys(p):
  return [(0, i // 9, 1, i % 9) for i in range(p)]


def test_constant_model_sits_exactly_at_chance():
  # All pairs tie in every example: each gets 1/P of a first place, never a standout.
  keys = [_keys(81)] * 50
  vals = [np.zeros(81)] * 50
  out = standout.top_pair_test(keys, vals)
  assert out["n_examples"] == 50 and out["n_pairs"] == 81 and out["n_standouts"] == 0
  for p in out["pairs"]:
    assert p["rate"] == pytest.approx(1 / 81) and p["chance"] == pytest.approx(1 / 81)


def test_noise_has_no_standout_and_a_planted_pair_does():
  rng = np.random.default_rng(0)
  keys = [_keys(81)] * 200
  noise = [rng.normal(size=81) for _ in range(200)]
  out = standout.top_pair_test(keys, noise)
  assert out["n_standouts"] == 0  # iid scores: every pair first at about the chance rate
  planted = []
  for e, v in enumerate(noise):  # pair 20 made the largest in 30% of examples
    v = v.copy()
    if e % 10 < 3:
      v[20] = 10.0
    planted.append(v)
  out = standout.top_pair_test(keys, planted)
  assert out["n_standouts"] == 1
  top = out["pairs"][0]
  assert top["pair"] == list(keys[0][20]) and top["stands_out"]
  assert top["rate"] >= 0.3 and top["se"] == pytest.approx(
    math.sqrt(top["rate"] * (1 - top["rate"]) / 200)
  )
  assert top["p_holm"] < 1e-10 and top["p_chance_holm"] < top["p_holm"]
  # Negative values stand out by magnitude, not when ranked by sign.
  neg = [-v for v in planted]
  assert standout.top_pair_test(keys, neg)["pairs"][0]["pair"] == list(keys[0][20])
  assert standout.top_pair_test(keys, neg, by="signed")["n_standouts"] == 0


def test_a_weak_preference_is_beyond_chance_but_does_not_stand_out():
  # 1000 examples, 81 pairs: pair 5 first in 8% (chance 1.2%), the rest shared at random.
  rng = np.random.default_rng(1)
  keys = [_keys(81)] * 1000
  vals = []
  for e in range(1000):
    v = rng.normal(size=81)
    if e % 25 < 2:
      v[5] = 10.0
    vals.append(v)
  out = standout.top_pair_test(keys, vals)
  top = out["pairs"][0]
  assert top["pair"] == list(keys[0][5]) and 0.08 <= top["rate"] < 0.1
  assert top["prefers"] and not top["stands_out"]
  assert out["n_preferred"] == 1 and out["n_standouts"] == 0
  # Without the materiality margin the preference is a standout.
  assert standout.top_pair_test(keys, vals, min_rate=0.0)["n_standouts"] == 1
  with pytest.raises(ValueError, match="min_rate"):
    standout.top_pair_test(keys, vals, min_rate=1.0)


def test_binomial_tail_holm_and_resolution_by_hand():
  # 5 pairs, 20 examples, pair 0 first in 9 of them, the rest first in turns.
  keys = [_keys(5)] * 20
  vals = []
  for e in range(20):
    v = np.zeros(5)
    v[0 if e < 9 else 1 + e % 4] = 1.0
    vals.append(v)
  out = standout.top_pair_test(keys, vals, keep=5)
  p0 = 1 / 5
  tail = sum(math.comb(20, k) * p0**k * (1 - p0) ** (20 - k) for k in range(9, 21))
  top = out["pairs"][0]
  assert top["firsts"] == 9 and top["p_chance"] == pytest.approx(tail, rel=1e-9)
  assert top["p"] == top["p_chance"]  # min_rate 0.1 is below the chance rate 0.2
  # Holm: the smallest p-value times 5; later ones times 4, 3, ... and never below an earlier one.
  p = np.array([0.01, 0.04, 0.03, 0.005])
  np.testing.assert_allclose(significance.holm(p), [0.03, 0.06, 0.06, 0.02])
  # Resolution: with 100 examples and 81 pairs a pair needs 7 first places (Bonferroni step).
  rate = standout._min_detectable_rate(100, 1 / 81, 81, 0.05)
  k = round(rate * 100)
  from scipy import stats

  assert stats.binom.sf(k - 1, 100, 1 / 81) * 81 < 0.05 <= stats.binom.sf(k - 2, 100, 1 / 81) * 81


def test_varying_candidates_and_ties():
  # Pair "a" is a candidate in 2 of 3 examples; its chance rate averages 1/2 and 1/4.
  keys = [["a", "b"], ["a", "b", "c", "d"], ["b", "c"]]
  vals = [np.array([1.0, 1.0]), np.array([3.0, 0.0, 0.0, 0.0]), np.array([0.0, 2.0])]
  out = standout.top_pair_test(keys, vals, keep=4)
  by = {p["pair"]: p for p in out["pairs"]}
  assert by["a"]["n"] == 2 and by["a"]["firsts"] == pytest.approx(1.5)  # a tie shares credit
  assert by["a"]["chance"] == pytest.approx((1 / 2 + 1 / 4) / 2)
  assert by["a"]["mean_abs"] == pytest.approx(2.0) and by["c"]["mean_abs"] == pytest.approx(1.0)
  assert by["b"]["n"] == 3 and by["b"]["firsts"] == pytest.approx(0.5)
  assert by["c"]["firsts"] == pytest.approx(1.0) and by["d"]["firsts"] == 0.0
  # An example with a NaN score has no ranking: left out and counted.
  out = standout.top_pair_test(keys + [["a", "b"]], vals + [np.array([np.nan, 1.0])], keep=4)
  assert out["n_examples"] == 3 and out["n_skipped_non_finite"] == 1


def test_bad_input_names_the_problem():
  with pytest.raises(ValueError, match="by must be"):
    standout.top_pair_test([["a"]], [np.zeros(1)], by="rank")
  with pytest.raises(ValueError, match="shape"):
    standout.top_pair_test([["a", "b"]], [np.zeros(3)])
  with pytest.raises(ValueError, match="key lists"):
    standout.top_pair_test([["a"]], [])


def test_per_example_separation_and_probe_summary():
  sep = standout.per_example_separation(np.array([1.0, 0.5, 0.0]), np.array([0.1, 0.1, 0.1]))
  assert sep["separated"] is True  # 0.5 > 2 * sqrt(0.02)
  assert sep["significant"] == pytest.approx(2 / 3) and sep["top_z"] == pytest.approx(10.0)
  close = standout.per_example_separation(np.array([1.0, 0.9]), np.array([0.1, 0.1]))
  assert close["separated"] is False
  zeros = standout.per_example_separation(np.zeros(4), np.zeros(4))
  assert zeros["significant"] == 0.0  # a constant model's exact zeros are not significant
  rec = {
    "sii": {
      "members": [[0, 1, 1, 0], [0, 2, 1, 0]],
      "values": {"SII": {"logit": [2.0, 0.1]}},
      "std_errors": {"SII": {"logit": [0.1, 0.1]}},
    },
    "rg": {
      "members": [[0, 1, 1, 0], [0, 2, 1, 0]],
      "values": {"RG": {"prob": [0.0, 0.3]}},
      "std_errors": {"RG": {"prob": [0.01, 0.01]}},
    },
  }
  out = standout.probe_standout([rec] * 4, sii_scale="logit", rg_scale="prob")
  assert out["SII"]["frac_top_separated"] == 1.0 and out["SII"]["mean_abs_top"] == 2.0
  top = out["SII"]["dataset"]["pairs"][0]
  assert top.pop("pair") == [0, 1, 1, 0]
  assert top.pop("stands_out") is False and top.pop("prefers") is False
  # 4 of 4 first places at chance 1/2: p = 1/16, Holm over 2 pairs doubles it.
  assert top == pytest.approx(
    {
      "n": 4,
      "firsts": 4.0,
      "rate": 1.0,
      "se": 0.0,
      "chance": 0.5,
      "mean_abs": 2.0,
      "p_chance": 0.0625,
      "p_chance_holm": 0.125,
      "p": 0.0625,
      "p_holm": 0.125,
    }
  )
  assert out["RG"]["dataset"]["pairs"][0]["pair"] == [0, 2, 1, 0]


def test_describe_names_standouts_and_weak_preferences():
  hit = {"rate": 0.5, "stands_out": True}
  res = {
    "pairs": [{**hit, "pair": [0, i, 1, 0]} for i in range(5)],
    "n_preferred": 6,
    "min_detectable_rate": 0.2,
  }
  assert standout.describe(res, ["text", "image"]) == (
    "5 (text 0 x image 0 (50%), text 1 x image 0 (50%), text 2 x image 0 (50%) and 2 more), "
    "and 1 other pair(s) first more often than chance only"
  )
  none = {"pairs": [], "n_preferred": 0, "min_detectable_rate": 0.22}
  assert (
    standout.describe(none, ["text", "image"]) == "none (a pair first in 22% of examples would)"
  )


def test_signed_reading_does_not_count_a_large_negative_sii_as_synergy():
  """A pair with large negative SII (a copy the synergy expert uses) is first by magnitude, not by sign."""
  rng = np.random.default_rng(0)
  recs = []
  for _ in range(40):
    sii = rng.normal(0.0, 0.01, 12)
    sii[3] = -1.0  # redundancy-like: large and negative in every example
    sii[7] = 0.2  # synergy-like: smaller but positive
    recs.append(
      {
        "sii": {
          "members": [[0, i, 1, i] for i in range(12)],
          "values": {"SII": {"logit": sii.tolist()}},
          "std_errors": {"SII": {"logit": [0.01] * 12}},
        },
        "rg": {
          "members": [[0, i, 1, i] for i in range(12)],
          "values": {"RG": {"prob": (-np.abs(sii)).tolist()}},
          "std_errors": {"RG": {"prob": [0.01] * 12}},
        },
      }
    )
  out = standout.probe_standout(recs, sii_scale="logit", rg_scale="prob")
  by_abs = [q["pair"] for q in out["SII"]["dataset"]["pairs"] if q["stands_out"]]
  by_sign = [q["pair"] for q in out["SII"]["dataset_signed"]["pairs"] if q["stands_out"]]
  assert by_abs == [[0, 3, 1, 3]] and by_sign == [[0, 7, 1, 7]]
  assert out["SII"]["dataset_signed"]["by"] == "signed"


def test_calls_need_the_effect_floor():
  """A pair first by a tiny positive score in every example is called nowhere; a large one is."""
  rng = np.random.default_rng(1)
  keys = [[(0, i, 1, i) for i in range(10)] for _ in range(50)]
  tiny = []
  for _ in range(50):
    v = rng.normal(0.0, 0.001, 10)
    v[2] = 0.05  # first everywhere, but 0.05 nats
    tiny.append(v)
  signed = standout.top_pair_test(keys, tiny, by="signed")
  called = standout.top_pair_test(keys, tiny, by="signed", min_value=0.25)
  assert [q["pair"] for q in signed["pairs"] if q["stands_out"]] == [[0, 2, 1, 2]]
  assert called["n_standouts"] == 0 and called["n_no_call"] == 50 and called["n_examples"] == 50
  big = [np.where(np.arange(10) == 2, 3.0, v) for v in tiny]
  big[0][2] = 0.1  # one example below the floor: no call there
  out = standout.top_pair_test(keys, big, by="signed", min_value=0.25)
  assert out["n_no_call"] == 1
  top = out["pairs"][0]
  assert top["pair"] == [0, 2, 1, 2] and top["stands_out"] and top["rate"] == pytest.approx(49 / 50)
  with pytest.raises(ValueError, match="min_value needs by='signed'"):
    standout.top_pair_test(keys, big, by="abs", min_value=0.25)


def test_probe_standout_calls_on_the_log_odds_scale_against_the_other_expert():
  rng = np.random.default_rng(2)

  def block(values):
    return {
      "members": [[0, i, 1, i] for i in range(8)],
      "values": {
        name: {"logit": values.tolist(), "prob": values.tolist(), "logodds": values.tolist()}
        for name in ("SII", "RG")
      },
      "std_errors": {name: {"logit": [0.01] * 8, "prob": [0.01] * 8} for name in ("SII", "RG")},
    }

  def records(sii_top, rg_of_that_pair):
    recs = []
    for _ in range(30):
      syn, red = rng.normal(0.0, 0.01, 8), rng.normal(0.0, 0.01, 8)
      syn[5], red[5] = sii_top, rg_of_that_pair
      recs.append({"sii": block(syn), "rg": block(red)})
    return recs

  # Pair 5 first in the synergy game by 0.1 nats: below the 0.25 floor, called nowhere.
  out = standout.probe_standout(records(0.1, 0.0), sii_scale="logit", rg_scale="prob")
  assert out["SII"]["dataset_signed"]["n_standouts"] == 1
  assert out["SII"]["dataset_called"]["n_standouts"] == 0
  assert out["SII"]["dataset_called"]["min_value"] == standout.DEFAULT_MIN_EFFECT
  # 2 nats: called, as long as the redundancy game's gap on the pair is smaller...
  big = standout.probe_standout(records(2.0, 0.5), sii_scale="logit", rg_scale="prob")
  assert [q["pair"] for q in big["SII"]["dataset_called"]["pairs"] if q["stands_out"]] == [
    [0, 5, 1, 5]
  ]
  assert big["RG"]["dataset_called"]["n_standouts"] == 0  # its 0.5 loses to the SII of 2
  # ...and not when the redundancy expert shows the larger effect (a copy that is also an AND).
  copy = standout.probe_standout(records(2.0, 9.0), sii_scale="logit", rg_scale="prob")
  assert copy["SII"]["dataset_called"]["n_standouts"] == 0
  assert copy["SII"]["dataset_signed"]["n_standouts"] == 1  # what the sign alone would claim
  assert [q["pair"] for q in copy["RG"]["dataset_called"]["pairs"] if q["stands_out"]] == [
    [0, 5, 1, 5]
  ]


def test_calls_weigh_each_score_by_its_experts_gate_weight():
  """The redundancy game ranks a pair first with 1 nat, but the gate gives that expert 0.1 of the
  output: its share (0.1 nat) is below the floor, no call. With weight 0.5 it is called, unless the
  synergy expert's share of the same pair is larger (0.6 x 0.9 nat), though its own score is smaller."""

  def record(gate, rg_top=1.0, sii_of_pair=0.0):
    rg, sii = np.zeros(4), np.zeros(4)
    rg[2], sii[2] = rg_top, sii_of_pair
    members = [[0, i, 1, i] for i in range(4)]
    out = {
      "sii": {"members": members, "values": {"SII": {"logodds": sii.tolist()}}},
      "rg": {"members": members, "values": {"RG": {"logodds": rg.tolist()}}},
    }
    return out if gate is None else {**out, "gate": gate}

  def called(rec):
    return standout.called_values(rec, "rg", 0.25)[2] >= 0.25

  assert called(record(None))  # files without weights: the scores alone, as before
  assert not called(record({"sii": 0.5, "rg": 0.1}))
  assert called(record({"sii": 0.5, "rg": 0.5}))
  assert called(record({"sii": 0.6, "rg": 0.5}, sii_of_pair=0.8))  # 0.48 < 0.5
  assert not called(record({"sii": 0.6, "rg": 0.5}, sii_of_pair=0.9))  # 0.54 > 0.5
  # The rule itself: shares, not scores.
  assert standout.is_call(True, 1.0, 0.9, 0.25, 0.5, 0.6) is False
  assert standout.is_call(True, 1.0, 0.9, 0.25) is True
  assert standout.is_call(True, 1.0, -np.inf, 0.25, 0.3, 0.0) is True
