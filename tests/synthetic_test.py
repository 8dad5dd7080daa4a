"""Tests of the planted-interaction generator (flmoe_jax/data/synthetic.py).

The label checks recover the bits from the features with their own projection code and apply a
label formula written out here, so a wrong write, position, direction or rule in the generator
makes them fail.
"""

import dataclasses
import itertools
import json
import math
import time

import numpy as np
import pytest

from flmoe_jax.data import synthetic
from flmoe_jax.data.synthetic import PlantedConfig

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def default_data():
  return synthetic.generate(PlantedConfig())


def _arrays(data):
  """Every array of a generated dataset, by a flat name."""
  out = {}
  for split in SPLITS:
    s = data[split]
    for key in ("features", "masks", "bits", "noise", "distractor_bits"):
      for k, v in s[key].items():
        out[f"{split}/{key}/{k}"] = v
    for key in ("labels", "text_len", "oracle_logits", "label_logits"):
      out[f"{split}/{key}"] = s[key]
  return out


def _proj(data, split, gt, modality, pos, direction):
  """Projection of the features at one position on one signal direction. Returns [N]."""
  u = np.asarray(gt["directions"][direction], np.float64)
  return data[split]["features"][modality][:, pos].astype(np.float64) @ u


def _recover_bits(data, split, gt):
  """Bits recovered from the features: sign of the projection (both copies summed if redundant)."""
  bits = {}
  for m in gt["mechanisms"]:
    pt = (
      _proj(data, split, gt, "text", m["text_pos"], m["text_direction"])
      if "text_pos" in m
      else None
    )
    pv = (
      _proj(data, split, gt, "image", m["image_pos"], m["image_direction"])
      if "image_pos" in m
      else None
    )
    if m["kind"] == "redundancy":
      bits[m["bits"][0]] = np.where(pt + pv > 0, 1, -1)
    elif m["kind"] in ("synergy", "complement"):
      bits[m["bits"][0]] = np.where(pt > 0, 1, -1)
      bits[m["bits"][1]] = np.where(pv > 0, 1, -1)
    elif m["kind"] == "uniq_text":
      bits[m["bits"][0]] = np.where(pt > 0, 1, -1)
    else:
      bits[m["bits"][0]] = np.where(pv > 0, 1, -1)
  return bits


def _mixed_rule(b, w=(2.0, 1.6, 0.9, 0.7, 0.8)):
  """The default binary mixed rule, written out independently of the generator."""
  ws, wr, wt, wv, wc = w
  f = (
    ws * b["syn0_text"] * b["syn0_image"]
    + wr * b["red0"]
    + wt * b["uniq_text"]
    + wv * b["uniq_image"]
    + wc * (b["comp_text"] + b["comp_image"])
  )
  return np.asarray(f > 0).astype(np.int32), f


# --------------------------------------------------------------------------------------------------
# Determinism.
# --------------------------------------------------------------------------------------------------


def test_same_seed_byte_identical_and_different_seed_differs(default_data):
  again = synthetic.generate(PlantedConfig())
  a, b = _arrays(default_data), _arrays(again)
  assert a.keys() == b.keys()
  for k in a:
    assert a[k].dtype == b[k].dtype, k
    assert a[k].tobytes() == b[k].tobytes(), k
  for split in SPLITS:
    assert default_data[split]["ids"] == again[split]["ids"]
  assert json.dumps(default_data["ground_truth"], sort_keys=True) == json.dumps(
    again["ground_truth"], sort_keys=True
  )
  other = synthetic.generate(PlantedConfig(seed=1))
  c = _arrays(other)
  assert a["train/features/text"].tobytes() != c["train/features/text"].tobytes()
  assert a["train/features/image"].tobytes() != c["train/features/image"].tobytes()
  assert a["train/labels"].tobytes() != c["train/labels"].tobytes()
  assert json.dumps(default_data["ground_truth"]) != json.dumps(other["ground_truth"])


def test_features_do_not_depend_on_label_knobs(default_data):
  alt = synthetic.generate(
    PlantedConfig(setting="synergy", label_type="multilabel", deterministic_labels=False)
  )
  for mod in ("text", "image"):
    assert (
      alt["train"]["features"][mod].tobytes() == default_data["train"]["features"][mod].tobytes()
    )


def test_ground_truth_is_json_and_complete(default_data):
  gt = default_data["ground_truth"]
  back = json.loads(json.dumps(gt))
  assert back["modality_names"] == ["text", "image"]
  kinds = sorted(p["kind"] for p in back["planted_pairs"])
  assert kinds == ["complement", "redundancy", "synergy"]
  assert sorted(u["kind"] for u in back["unique"]) == ["uniq_image", "uniq_text"]
  assert len(back["distractors"]["text"]) == 2 and len(back["distractors"]["image"]) == 2
  assert back["bayes_method"] in ("monte_carlo_true_posterior", "exact_enumeration")
  assert 0.999 < back["bayes_optimal_accuracy"] <= 1.0
  assert back["config"]["seed"] == 0
  assert synthetic.config_from_ground_truth(back) == PlantedConfig()
  d = np.asarray(back["directions"])
  np.testing.assert_allclose(d @ d.T, np.eye(len(d)), atol=1e-10)
  # Every mechanism can flip the label (the default weights make no term irrelevant).
  assert min(back["pivotal_probability"].values()) > 0.1


def test_generation_is_fast():
  t0 = time.perf_counter()
  synthetic.generate(PlantedConfig(seed=3))
  assert time.perf_counter() - t0 < 2.0  # ~0.25 s on a laptop; loose bound for slow CI machines.


# --------------------------------------------------------------------------------------------------
# The planted rule.
# --------------------------------------------------------------------------------------------------


def test_labels_follow_the_rule_on_latent_and_recovered_bits(default_data):
  gt = default_data["ground_truth"]
  for split in SPLITS:
    s = default_data[split]
    y, f = _mixed_rule({k: v.astype(np.float64) for k, v in s["bits"].items()})
    np.testing.assert_array_equal(s["labels"], y)
    np.testing.assert_allclose(s["oracle_logits"][:, 0], f, rtol=1e-6)
    rec = _recover_bits(default_data, split, gt)
    y_rec, _ = _mixed_rule({k: v.astype(np.float64) for k, v in rec.items()})
    # High SNR: plain bits are recovered exactly (error ~1e-9); the redundancy bit errs w.p. ~1e-5.
    for k, v in rec.items():
      mism = int((v != s["bits"][k]).sum())
      assert mism <= (2 if k.startswith("red") else 0), (split, k, mism)
    acc = float((y_rec == s["labels"]).mean())
    assert acc >= gt["bayes_optimal_accuracy"] - 2e-3
    # The generator's own rule on recovered bits agrees with the written-out one.
    np.testing.assert_array_equal(
      synthetic.labels_from_logits(gt, synthetic.head_logits(gt, rec)), y_rec
    )


def test_bit_recovery_error_matches_the_noise_model():
  cfg = PlantedConfig(
    amplitude=1.0, noise_sigma=1.0, redundancy_noise=0.8, n_train=4000, n_val=0, n_test=0, seed=5
  )
  data = synthetic.generate(cfg)
  gt = data["ground_truth"]
  rec = _recover_bits(data, "train", gt)
  expect = 0.5 * math.erfc(1.0 / math.sqrt(2.0))  # P(N(a, σ²) < 0) at a = σ.
  assert gt["bit_recovery_error"]["syn0_text"] == pytest.approx(expect, rel=1e-9)
  errs = [
    float((rec[b] != data["train"]["bits"][b]).mean())
    for b in ("syn0_text", "uniq_image", "comp_text")
  ]
  se = math.sqrt(expect * (1 - expect) / cfg.n_train)
  for e in errs:
    assert abs(e - expect) < 4 * se, (e, expect)
  # Redundancy bit (sign of the sum of both copies): z ~ N(b, s² + σ²/(2a²)).
  expect_r = 0.5 * math.erfc(1.0 / math.sqrt(2.0 * (0.8**2 + 0.5)))
  assert gt["bit_recovery_error"]["red0"] == pytest.approx(expect_r, rel=1e-9)
  e_r = float((rec["red0"] != data["train"]["bits"]["red0"]).mean())
  assert abs(e_r - expect_r) < 4 * math.sqrt(expect_r * (1 - expect_r) / cfg.n_train), (
    e_r,
    expect_r,
  )
  # The plug-in rule cannot beat the Bayes rule, and is close to it.
  y_rec, _ = _mixed_rule({k: v.astype(np.float64) for k, v in rec.items()})
  acc = float((y_rec == data["train"]["labels"]).mean())
  bayes = gt["bayes_optimal_accuracy"]
  assert gt["bayes_method"] == "monte_carlo_true_posterior"
  assert 0.6 < bayes < 0.95
  assert acc <= bayes + 4 * math.sqrt(bayes * (1 - bayes) / cfg.n_train)
  assert acc >= bayes - 0.06


def test_posterior_classifier_attains_reported_bayes_accuracy():
  """The true-posterior classifier, computed here from the features, scores the reported Bayes."""
  cfg = PlantedConfig(
    amplitude=1.0, noise_sigma=1.0, redundancy_noise=0.8, n_train=6000, n_val=0, n_test=0, seed=7
  )
  data = synthetic.generate(cfg)
  gt, s = data["ground_truth"], data["train"]
  a, sigma = cfg.amplitude, cfg.noise_sigma
  post = {}  # P(b = +1 | features) per bit.
  for m in gt["mechanisms"]:
    if m["kind"] == "redundancy":
      pt = _proj(data, "train", gt, "text", m["text_pos"], m["text_direction"])
      pv = _proj(data, "train", gt, "image", m["image_pos"], m["image_direction"])
      var = cfg.redundancy_noise**2 + sigma**2 / (2 * a**2)
      post[m["bits"][0]] = 1 / (1 + np.exp(-2 * ((pt + pv) / (2 * a)) / var))
      continue
    for bit, mod in zip(m["bits"], [k for k in ("text", "image") if f"{k}_pos" in m]):
      z = _proj(data, "train", gt, mod, m[f"{mod}_pos"], m[f"{mod}_direction"]) / a
      post[bit] = 1 / (1 + np.exp(-2 * z * a**2 / sigma**2))
  names = list(post)
  p1 = np.zeros(cfg.n_train)
  for conf in itertools.product([-1.0, 1.0], repeat=len(names)):
    b = dict(zip(names, conf))
    w = np.prod([post[k] if b[k] > 0 else 1 - post[k] for k in names], axis=0)
    p1 += w * float(_mixed_rule(b)[0])
  acc = float(((p1 > 0.5).astype(np.int32) == s["labels"]).mean())
  bayes = gt["bayes_optimal_accuracy"]
  assert abs(acc - bayes) < 4 * math.sqrt(bayes * (1 - bayes) / cfg.n_train), (acc, bayes)
  assert gt["all_label_bits_recovered_probability"] < bayes


def test_bernoulli_labels_bayes_accuracy_is_attained():
  cfg = PlantedConfig(
    deterministic_labels=False, kappa=1.0, n_train=6000, n_val=0, n_test=0, seed=2
  )
  data = synthetic.generate(cfg)
  gt = data["ground_truth"]
  s = data["train"]
  _, f = _mixed_rule({k: v.astype(np.float64) for k, v in s["bits"].items()})
  # With clean bits, the Bayes rule is sign(f*); its accuracy must match the reported one.
  acc = float(((f > 0).astype(np.int32) == s["labels"]).mean())
  bayes = gt["bayes_optimal_accuracy"]
  assert bayes < 0.95
  assert abs(acc - bayes) < 4 * math.sqrt(bayes * (1 - bayes) / cfg.n_train)
  # Exact value: E_bits[max(σ(κf), 1 - σ(κf))], enumerated here.
  vals = []
  names = ["syn0_text", "syn0_image", "red0", "uniq_text", "uniq_image", "comp_text", "comp_image"]
  for b in itertools.product([-1.0, 1.0], repeat=7):
    _, ff = _mixed_rule(dict(zip(names, b)))
    p = 1 / (1 + math.exp(-ff))
    vals.append(max(p, 1 - p))
  assert bayes == pytest.approx(np.mean(vals), abs=5e-3)


def test_noise_free_bayes_is_exact_and_one():
  cfg = PlantedConfig(noise_sigma=0.0, redundancy_noise=0.0, n_train=500, n_val=10, n_test=10)
  data = synthetic.generate(cfg)
  gt = data["ground_truth"]
  assert gt["bayes_method"] == "exact_enumeration"
  assert gt["bayes_optimal_accuracy"] == 1.0
  rec = _recover_bits(data, "train", gt)
  for k, v in rec.items():
    np.testing.assert_array_equal(v, data["train"]["bits"][k])


# --------------------------------------------------------------------------------------------------
# Redundancy (shared noise draw) and complement (independent bits).
# --------------------------------------------------------------------------------------------------


def test_redundant_copies_share_one_noise_draw():
  cfg = PlantedConfig(redundancy_noise=0.5, n_train=3000, n_val=0, n_test=0)
  data = synthetic.generate(cfg)
  gt, s = data["ground_truth"], data["train"]
  red = next(p for p in gt["planted_pairs"] if p["kind"] == "redundancy")
  pt = _proj(data, "train", gt, "text", red["text_pos"], red["text_direction"])
  pv = _proj(data, "train", gt, "image", red["image_pos"], red["image_direction"])
  a, sigma = cfg.amplitude, cfg.noise_sigma
  latent = s["bits"]["red0"] + s["noise"]["red0_eta"].astype(np.float64)
  # Each copy = a·(b + η) + white noise, with the SAME η: the difference holds only the white noise.
  np.testing.assert_allclose(np.std(pt - a * latent), sigma, rtol=0.08)
  np.testing.assert_allclose(np.std(pv - a * latent), sigma, rtol=0.08)
  np.testing.assert_allclose(np.std(pt - pv), sigma * math.sqrt(2), rtol=0.08)
  # Independent draws would give sqrt(2(σ² + a²s²)) = 2.3 here, not 0.71.
  assert np.std(pt - pv) < 0.5 * math.sqrt(2 * (sigma**2 + (a * cfg.redundancy_noise) ** 2))
  assert np.corrcoef(pt / a - s["bits"]["red0"], pv / a - s["bits"]["red0"])[0, 1] > 0.8


def test_complement_bits_are_independent(default_data):
  gt = default_data["ground_truth"]
  s = default_data["train"]
  n = len(s["ids"])
  bt, bv = s["bits"]["comp_text"].astype(float), s["bits"]["comp_image"].astype(float)
  assert abs(np.corrcoef(bt, bv)[0, 1]) < 4 / math.sqrt(n)
  rec = _recover_bits(default_data, "train", gt)
  assert abs(np.corrcoef(rec["comp_text"], rec["comp_image"])[0, 1]) < 4 / math.sqrt(n)
  # Whereas the redundant copies are the same latent.
  red = next(p for p in gt["planted_pairs"] if p["kind"] == "redundancy")
  pt = _proj(default_data, "train", gt, "text", red["text_pos"], red["text_direction"])
  pv = _proj(default_data, "train", gt, "image", red["image_pos"], red["image_direction"])
  assert np.corrcoef(pt, pv)[0, 1] > 0.9


# --------------------------------------------------------------------------------------------------
# Positions, masks, padding, background.
# --------------------------------------------------------------------------------------------------


def test_positions_masks_and_padding(default_data):
  cfg = PlantedConfig()
  gt = default_data["ground_truth"]
  text_pos = [m["text_pos"] for m in gt["mechanisms"] if "text_pos" in m]
  text_pos += [d["pos"] for d in gt["distractors"]["text"]]
  image_pos = [m["image_pos"] for m in gt["mechanisms"] if "image_pos" in m]
  image_pos += [d["pos"] for d in gt["distractors"]["image"]]
  assert len(set(text_pos)) == len(text_pos) and len(set(image_pos)) == len(image_pos)
  assert all(1 <= p < cfg.min_text_len for p in text_pos)
  assert all(0 <= p < cfg.image_len for p in image_pos)
  for m in gt["mechanisms"]:
    if "image_pos" in m:
      assert m["image_player"] == cfg.text_len + m["image_pos"]
  for split in SPLITS:
    s = default_data[split]
    n = len(s["ids"])
    mt, mv = s["masks"]["text"], s["masks"]["image"]
    assert mt.dtype == np.bool_ and mt.shape == (n, cfg.text_len)
    assert mv.dtype == np.bool_ and mv.shape == (n, cfg.image_len) and mv.all()
    np.testing.assert_array_equal(mt, np.arange(cfg.text_len)[None] < s["text_len"][:, None])
    assert s["text_len"].min() >= cfg.min_text_len and s["text_len"].max() <= cfg.text_len
    assert mt[:, text_pos].all() and mt[:, 0].all()  # Planted tokens never in padding.
    assert (s["features"]["text"][~mt] == 0).all()
    assert len(set(s["ids"])) == n
  # Variable lengths actually occur.
  assert len(np.unique(default_data["train"]["text_len"])) > 5


def test_distractors_carry_planted_directions_with_label_free_bits(default_data):
  gt, s = default_data["ground_truth"], default_data["train"]
  n = len(s["ids"])
  planted_dirs = {
    mod: {m[f"{mod}_direction"] for m in gt["mechanisms"] if f"{mod}_pos" in m}
    for mod in ("text", "image")
  }
  for mod in ("text", "image"):
    for k, d in enumerate(gt["distractors"][mod]):
      assert d["direction"] in planted_dirs[mod]  # A decoy looks like a planted write.
      p = _proj(default_data, "train", gt, mod, d["pos"], d["direction"])
      np.testing.assert_array_equal(np.where(p > 0, 1, -1), s["distractor_bits"][mod][:, k])
      assert abs(np.corrcoef(p, s["labels"])[0, 1]) < 4 / math.sqrt(n)


def test_background_mean_is_nonzero_and_neutral_on_signal_directions(default_data):
  gt = default_data["ground_truth"]
  s = default_data["train"]
  u = np.asarray(gt["directions"])
  for mod in ("text", "image"):
    x, m = s["features"][mod].astype(np.float64), s["masks"][mod]
    mean = (x * m[..., None]).sum((0, 1)) / m.sum()
    assert np.linalg.norm(mean) > 1.0  # Zero fill != mean fill.
    # Mean fill removes a planted bit: its projection is ~0, far from ±a.
    assert np.abs(mean @ u.T).max() < 0.05 * gt["amplitude"]


# --------------------------------------------------------------------------------------------------
# Settings and knobs.
# --------------------------------------------------------------------------------------------------


def test_null_setting_labels_independent_of_features():
  cfg = PlantedConfig(setting="null", n_train=4000, n_val=0, n_test=0)
  data = synthetic.generate(cfg)
  gt, s = data["ground_truth"], data["train"]
  n = cfg.n_train
  y = s["labels"].astype(float)
  _, f_feat = _mixed_rule({k: v.astype(np.float64) for k, v in s["bits"].items()})
  assert abs(np.corrcoef(y, f_feat)[0, 1]) < 4 / math.sqrt(n)
  for k, v in s["bits"].items():
    assert abs(np.corrcoef(y, v.astype(float))[0, 1]) < 4 / math.sqrt(n), k
  y_hidden, _ = _mixed_rule({k: v.astype(np.float64) for k, v in s["hidden_bits"].items()})
  np.testing.assert_array_equal(s["labels"], y_hidden)
  assert (s["oracle_logits"] == 0).all()
  assert synthetic.oracle_moebius(gt, synthetic.sample_bits(s, 0)) == {}
  assert all(m["weight"] == 0 for m in gt["mechanisms"])
  assert gt["bayes_method"] == "exact_enumeration_null_prior"
  assert gt["bayes_optimal_accuracy"] == pytest.approx(0.5)


@pytest.mark.parametrize(
  "setting,formula",
  [
    ("synergy", lambda b: b["syn0_text"] * b["syn0_image"] > 0),
    ("redundancy", lambda b: b["red0"] > 0),
    ("uniq_text", lambda b: b["uniq_text"] > 0),
    ("uniq_image", lambda b: b["uniq_image"] > 0),
    ("complement", lambda b: b["comp_text"] + b["comp_image"] > 0),
  ],
)
def test_pure_settings(setting, formula):
  data = synthetic.generate(PlantedConfig(setting=setting, n_train=300, n_val=20, n_test=20))
  gt, s = data["ground_truth"], data["train"]
  np.testing.assert_array_equal(s["labels"], formula(s["bits"]).astype(np.int32))
  active = [m["name"] for m in gt["mechanisms"] if m["weight"] != 0]
  assert len(active) == 1


def test_sizes_and_label_types():
  kw = dict(n_train=37, n_val=5, n_test=3, text_len=16, min_text_len=9, image_len=9, dim=24)
  b = synthetic.generate(PlantedConfig(**kw))
  assert b["train"]["features"]["text"].shape == (37, 16, 24)
  assert b["train"]["features"]["image"].shape == (37, 9, 24)
  assert b["train"]["features"]["text"].dtype == np.float32
  assert b["val"]["labels"].shape == (5,) and b["test"]["labels"].shape == (3,)
  assert b["train"]["labels"].dtype == np.int32 and set(np.unique(b["train"]["labels"])) <= {0, 1}
  assert b["ground_truth"]["players"]["image_grid"] == [3, 3]

  ml = synthetic.generate(PlantedConfig(label_type="multilabel", **kw))
  gt = ml["ground_truth"]
  heads = [h["name"] for h in gt["label_rule"]["heads"]]
  assert heads == ["syn0", "red0", "uniq_text", "uniq_image", "comp"]
  y = ml["train"]["labels"]
  assert y.dtype == np.uint8 and y.shape == (37, 5) and set(np.unique(y)) <= {0, 1}
  bb = {k: v.astype(float) for k, v in ml["train"]["bits"].items()}
  np.testing.assert_array_equal(y[:, 0], (bb["syn0_text"] * bb["syn0_image"] > 0))
  np.testing.assert_array_equal(y[:, 1], bb["red0"] > 0)
  np.testing.assert_array_equal(y[:, 4], bb["comp_text"] + bb["comp_image"] > 0)
  assert gt["class_names"] == heads

  mc = synthetic.generate(PlantedConfig(label_type="multiclass", **kw))
  ymc = mc["train"]["labels"]
  assert ymc.dtype == np.int32 and ymc.shape == (37,)
  assert mc["ground_truth"]["num_classes"] == 32 and ymc.max() < 32
  # Same code bits as the multilabel heads.
  np.testing.assert_array_equal(ymc, (y.astype(int) * 2 ** np.arange(5)).sum(1))


def test_two_synergy_pairs():
  cfg = PlantedConfig(n_synergy_pairs=2, n_train=400, n_val=10, n_test=10, setting="synergy")
  data = synthetic.generate(cfg)
  gt, s = data["ground_truth"], data["train"]
  syn = [p for p in gt["planted_pairs"] if p["kind"] == "synergy"]
  assert len(syn) == 2 and syn[0]["text_pos"] != syn[1]["text_pos"]
  b = {k: v.astype(float) for k, v in s["bits"].items()}
  f = 2.0 * (b["syn0_text"] * b["syn0_image"] + b["syn1_text"] * b["syn1_image"])
  np.testing.assert_array_equal(s["labels"], (f > 0).astype(np.int32))
  rec = _recover_bits(data, "train", gt)
  for k in ("syn1_text", "syn1_image"):
    np.testing.assert_array_equal(rec[k], s["bits"][k])
  ml = synthetic.generate(dataclasses.replace(cfg, label_type="multilabel"))
  assert ml["train"]["labels"].shape == (400, 2)


def test_invalid_configs_raise():
  with pytest.raises(ValueError):
    PlantedConfig(image_len=10)
  with pytest.raises(ValueError):
    PlantedConfig(setting="xor")
  with pytest.raises(ValueError):
    synthetic.generate(PlantedConfig(min_text_len=4))  # 6 text positions do not fit in [1, 4).
  with pytest.raises(ValueError):
    synthetic.generate(PlantedConfig(include_unique=False, setting="uniq_text"))


# --------------------------------------------------------------------------------------------------
# Oracle game.
# --------------------------------------------------------------------------------------------------


def _brute_oracle(gt, present, b):
  """Oracle value by removing absent players' bits directly (no Möbius algebra)."""
  f = 0.0
  for m in gt["mechanisms"]:
    w = m["weight"]
    t_in = present.get(m.get("text_player"), False)
    v_in = present.get(m.get("image_player"), False)
    if m["kind"] == "synergy":
      f += w * (b[m["bits"][0]] if t_in else 0) * (b[m["bits"][1]] if v_in else 0)
    elif m["kind"] == "redundancy":
      f += w * b[m["bits"][0]] * (t_in or v_in)
    elif m["kind"] == "complement":
      f += w * (b[m["bits"][0]] * t_in + b[m["bits"][1]] * v_in)
    elif m["kind"] == "uniq_text":
      f += w * b[m["bits"][0]] * t_in
    else:
      f += w * b[m["bits"][0]] * v_in
  return f


def test_oracle_game(default_data):
  gt, s = default_data["ground_truth"], default_data["test"]
  n_players = gt["players"]["n_players"]
  rng = np.random.default_rng(0)
  syn = next(p for p in gt["planted_pairs"] if p["kind"] == "synergy")
  red = next(p for p in gt["planted_pairs"] if p["kind"] == "redundancy")
  for i in range(20):
    b = synthetic.sample_bits(s, i)
    coef = synthetic.oracle_moebius(gt, b)
    full = synthetic.oracle_value(gt, np.ones((1, n_players), bool), b)
    assert full[0] == pytest.approx(float(s["oracle_logits"][i, 0]), abs=1e-5)
    masks = rng.random((64, n_players)) < 0.5
    v = synthetic.oracle_value(gt, masks, b)
    for c in range(64):
      present = {p: bool(masks[c, p]) for p in range(n_players)}
      assert v[c] == pytest.approx(_brute_oracle(gt, present, b))
    # Pairwise interaction at the empty background: +w·b1·b2 for synergy, -w·b for redundancy.
    assert coef[(syn["text_player"], syn["image_player"])] == pytest.approx(
      2.0 * b["syn0_text"] * b["syn0_image"]
    )
    assert coef[(red["text_player"], red["image_player"])] == pytest.approx(-1.6 * b["red0"])
    assert all(len(k) <= 2 for k in coef)
  with pytest.raises(ValueError):
    synthetic.oracle_value(gt, np.ones((1, n_players + 1), bool), synthetic.sample_bits(s, 0))


# --------------------------------------------------------------------------------------------------
# Store round trip (needs flmoe_jax/data/store.py).
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label_type", ["binary", "multilabel"])
def test_write_synthetic_store(tmp_path, label_type):
  store = pytest.importorskip("flmoe_jax.data.store")
  cfg = PlantedConfig(n_train=64, n_val=16, n_test=8, label_type=label_type)
  path = synthetic.write_synthetic_store(cfg, tmp_path / "synth")
  data = synthetic.generate(cfg)
  fs = store.open_store(path)
  assert fs.modality_names == ("text", "image")
  assert fs.task.type == label_type
  assert fs.counts == {"train": 64, "val": 16, "test": 8}
  for split in SPLITS:
    sp = fs.split(split)
    np.testing.assert_array_equal(sp.features[0], data[split]["features"]["text"])
    np.testing.assert_array_equal(sp.features[1], data[split]["features"]["image"])
    np.testing.assert_array_equal(sp.masks[0], data[split]["masks"]["text"])
    np.testing.assert_array_equal(sp.labels, data[split]["labels"])
    assert list(sp.ids) == data[split]["ids"]
  gt = fs.ground_truth()
  assert gt == json.loads(json.dumps(data["ground_truth"]))
  assert synthetic.config_from_ground_truth(gt) == cfg
  with pytest.raises(store.StoreError):
    synthetic.write_synthetic_store(cfg, path)  # Exists, no overwrite.
  synthetic.write_synthetic_store(cfg, path, overwrite=True)


def test_the_store_keeps_every_examples_planted_bits_and_the_probes_read_them(
  tmp_path, monkeypatch
):
  """Per-example bits travel with the store; the probes' sign analysis never regenerates the data."""
  from flmoe_jax.data import store as store_lib
  from flmoe_jax.probes import planted as planted_lib

  cfg = PlantedConfig(setting="mixed", n_train=40, n_val=12, n_test=12)
  data = synthetic.generate(cfg)
  fs = store_lib.open_store(synthetic.write_synthetic_store(cfg, tmp_path / "store"))
  for split in ("train", "val", "test"):
    bits = fs.planted_bits(split)
    assert bits.keys() == data[split]["bits"].keys()
    for name, v in bits.items():
      np.testing.assert_array_equal(v, data[split]["bits"][name])

  def no_regeneration(*_, **__):
    raise AssertionError("the probes regenerated the data set")

  monkeypatch.setattr(synthetic, "generate", no_regeneration)
  rows = np.arange(12)
  planted = planted_lib.planted_setup(fs.ground_truth(), fs, "test", rows)
  syn = next(n for n, p in planted["pairs"].items() if p["kind"] == "synergy")
  b = [data["test"]["bits"][x].astype(float) for x in planted["pairs"][syn]["bits"]]
  want = np.sign(planted["pairs"][syn]["weight"] * b[0] * b[1])
  np.testing.assert_array_equal(planted["term_sign"][syn], want)
