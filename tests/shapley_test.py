"""The Shapley-interaction engine against closed forms, shapiq, and the planted oracle game.

* exact SII / SV on sums of unanimity games equal their closed forms;
* exact SII equals shapiq's ExactComputer (index="SII", order=2, passed explicitly) on random games;
* the Monte Carlo SII / RG estimators are unbiased (mean over many keys = exact) and their error
  falls like 1/sqrt(budget), with honest standard errors;
* the batched kernel (many examples in one call) equals the per-example kernel, key for key;
* on the synthetic generator's oracle SOUM game the closed forms of DATA.md 3.4 hold (synergy +M,
  redundancy -M for SII; RG isolates redundancy), exactly and by Monte Carlo.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flmoe_jax.data import synthetic
from flmoe_jax.probes import games, shapley


def _table_game(values: np.ndarray, n: int) -> games.Game:
  """A game given by its value table (row k = coalition with the bits of k)."""
  table = jnp.asarray(values, jnp.float32)
  powers = 2 ** jnp.arange(n)

  def value_fn(c):
    return table[(c.astype(jnp.int32) * powers).sum(-1)]

  return games.game_from_value_fn(value_fn, n)


def _random_soum(rng, n, n_terms, max_size):
  coef = {}
  for _ in range(n_terms):
    size = int(rng.integers(1, max_size + 1))
    t = tuple(sorted(rng.choice(n, size, replace=False).tolist()))
    coef[t] = coef.get(t, 0.0) + float(rng.normal())
  return coef


def _closed_form_sii(coef, t):
  return sum(c / (len(s) - len(t) + 1) for s, c in coef.items() if set(t) <= set(s))


# --------------------------------------------------------------------------------------------------
# Exact enumeration.
# --------------------------------------------------------------------------------------------------


def test_exact_matches_closed_form_on_sum_of_unanimity_games():
  rng = np.random.default_rng(0)
  n = 8
  coef = _random_soum(rng, n, n_terms=12, max_size=5)
  game = games.soum_game(coef, n)
  sii = shapley.exact_interactions(game, index="SII", max_order=2)
  for t in itertools.chain(
    itertools.combinations(range(n), 1), itertools.combinations(range(n), 2)
  ):
    assert sii[t] == pytest.approx(_closed_form_sii(coef, t), abs=1e-5)
  sv = shapley.shapley_values(game)
  for i in range(n):  # SV(i) = Σ_{T∋i} c_T/|T|, and efficiency
    assert sv[(i,)] == pytest.approx(sum(c / len(s) for s, c in coef.items() if i in s), abs=1e-5)
  assert sum(sv.dict_values.values()) == pytest.approx(
    float(sv.grand_value - sv.baseline_value), abs=1e-4
  )
  mob = shapley.exact_interactions(game, index="Moebius", max_order=5)
  for t, c in coef.items():
    assert mob[t] == pytest.approx(c, abs=1e-5)
  assert float(sii.baseline_value) == 0.0 and sii.exact and sii.budget == 2**n


@pytest.mark.parametrize("n", [4, 7])
def test_exact_sii_equals_shapiq_exact_computer(n):
  from shapiq import ExactComputer

  rng = np.random.default_rng(n)
  values = rng.normal(size=2**n)
  values[0] = 0.3  # a non-zero baseline: it must land in baseline_value, not in the indices

  def np_game(c):
    return values[(np.asarray(c, int) * 2 ** np.arange(n)).sum(-1)]

  ref = ExactComputer(n_players=n, game=np_game)(index="SII", order=2)  # index/order explicit
  ours = shapley.exact_interactions(_table_game(values, n), index="SII", max_order=2, min_order=0)
  for t, v in ref.dict_values.items():
    assert ours[t] == pytest.approx(v, abs=1e-5), t
  assert float(ours.baseline_value) == pytest.approx(ref.baseline_value, abs=1e-6)


def test_pair_scores_exact_path_and_rg_identities():
  rng = np.random.default_rng(1)
  n = 6
  game = _table_game(rng.normal(size=2**n), n)
  pairs = np.array([[0, 1], [2, 5], [4, 3]])
  res = shapley.pair_scores(game, pairs, budget=2**n, key=jax.random.key(0))  # budget covers 2^n
  assert res.exact and res.estimator == "exact" and res.budget == 2**n
  ref = shapley.exact_interactions(game, index="SII", max_order=2)
  np.testing.assert_allclose(res.values["SII"], [ref[tuple(p)] for p in pairs], atol=1e-5)
  np.testing.assert_allclose(res.values["RG-additive"], -res.values["SII"], atol=1e-6)
  # The max form against a brute-force loop over the backgrounds of one pair.
  v = shapley.exact_values(game)
  i, j = 2, 5
  tot = 0.0
  for s in range(2**n):
    if s & (1 << i) or s & (1 << j):
      continue
    k = bin(s).count("1")
    w = math.factorial(k) * math.factorial(n - k - 2) / math.factorial(n - 1)
    vij, vi, vj, v0 = v[s | 1 << i | 1 << j], v[s | 1 << i], v[s | 1 << j], v[s]
    tot += w * ((vij - v0) - max(vij - vj, vij - vi))
  assert res.values["RG"][1] == pytest.approx(tot, abs=1e-5)


def test_multi_output_game_scores_each_output():
  rng = np.random.default_rng(2)
  n = 5
  a, b = rng.normal(size=2**n), rng.normal(size=2**n)
  table = jnp.asarray(np.stack([a, b], -1), jnp.float32)

  def value_fn(c):
    return table[(c.astype(jnp.int32) * 2 ** jnp.arange(n)).sum(-1)]

  game = games.game_from_value_fn(value_fn, n, outputs=("a", "b"))
  res = shapley.pair_scores(game, [[0, 1], [3, 4]], budget=10**4, key=jax.random.key(0))
  for k, vals in enumerate((a, b)):
    ref = shapley.exact_interactions(_table_game(vals, n), index="SII", max_order=2)
    np.testing.assert_allclose(
      res.value("SII", ("a", "b")[k]), [ref[(0, 1)], ref[(3, 4)]], atol=1e-5
    )


# --------------------------------------------------------------------------------------------------
# Monte Carlo.
# --------------------------------------------------------------------------------------------------


def _mc_many(game, pairs, n_draws, antithetic, n_keys, seed=0):
  """MC estimates for many keys in one vmapped call: (means, ses) per index, [n_keys, P]."""
  keys = jax.random.split(jax.random.key(seed), n_keys)
  run = functools.partial(
    shapley.mc_pair_statistics,
    game.fn,
    game.params,
    pairs=jnp.asarray(pairs, jnp.int32),
    n_valid=jnp.int32(game.n_players),
    n_players=game.n_players,
    n_draws=n_draws,
    antithetic=antithetic,
    chunk=1 << 20,
  )
  out = jax.vmap(lambda k: run(key=k))(keys)
  return {name: (np.asarray(m), np.asarray(s)) for name, (m, s) in out.items()}


@pytest.mark.parametrize("antithetic", [False, True])
def test_mc_is_unbiased(antithetic):
  rng = np.random.default_rng(3)
  n = 9
  game = _table_game(rng.normal(size=2**n), n)
  pairs = np.array([[0, 1], [2, 7], [8, 3], [4, 5]])
  exact = shapley.pair_scores(game, pairs, budget=2**n, key=jax.random.key(0))
  est = _mc_many(game, pairs, n_draws=8, antithetic=antithetic, n_keys=2000)
  for name in ("SII", "RG", "RG-additive"):
    means = est[name][0]  # [keys, P]
    sem = means.std(0, ddof=1) / np.sqrt(len(means))
    z = (means.mean(0) - exact.values[name]) / sem
    assert np.all(np.abs(z) < 4.5), (name, z)


def test_mc_error_falls_like_inverse_sqrt_budget_and_se_is_honest():
  rng = np.random.default_rng(4)
  n = 10
  game = _table_game(rng.normal(size=2**n), n)
  pairs = np.array([[0, 1], [5, 9]])
  exact = shapley.pair_scores(game, pairs, budget=2**n, key=jax.random.key(0)).values["SII"]
  rmse, mean_se = {}, {}
  for r in (8, 128):
    m, s = _mc_many(game, pairs, n_draws=r, antithetic=False, n_keys=400)["SII"]
    rmse[r] = np.sqrt(((m - exact) ** 2).mean(0))
    mean_se[r] = s.mean(0)
    # The reported standard error matches the spread across keys (within sampling noise).
    np.testing.assert_allclose(mean_se[r], m.std(0), rtol=0.25)
  ratio = rmse[8] / rmse[128]  # 16x budget -> 4x smaller error
  assert np.all((ratio > 3.0) & (ratio < 5.3)), ratio


@pytest.mark.parametrize("antithetic", [False, True])
def test_standard_error_is_calibrated(antithetic):
  """Mean reported SE / empirical SD of the estimate over 400 keys in [0.8, 1.2], every index.

  An inflated SE (which any `err <= 4 SE` bound accepts) or one that ignores the antithetic
  pairing fails here.
  """
  rng = np.random.default_rng(5)
  n = 10
  game = _table_game(rng.normal(size=2**n), n)
  pairs = np.array([[0, 1], [5, 9], [2, 3]])
  est = _mc_many(game, pairs, n_draws=16, antithetic=antithetic, n_keys=400)
  for name in ("SII", "RG", "RG-additive"):
    m, s = est[name]
    ratio = s.mean(0) / m.std(0, ddof=1)
    assert np.all((ratio > 0.8) & (ratio < 1.2)), (name, ratio)


def _dict_game(coalitions, params):
  """A nonlinear two-output game whose params mix shared (`quad`) and per-example leaves."""
  x = coalitions.astype(jnp.float32) * params["scale"]  # [C, n]
  z = x @ params["lin"] + ((x @ params["quad"]) * x).sum(-1)
  return jnp.stack([z, jnp.tanh(z)], -1)


@pytest.mark.parametrize(
  "chunk, antithetic",
  [(4096, True), (200, False), (7, True)],  # all examples per call; 2 (+ a remainder); 1, chunked
)
def test_batched_mc_kernel_equals_the_per_example_kernel(chunk, antithetic):
  """Same keys -> same numbers: 3 examples with different player counts, pairs and params."""
  rng = np.random.default_rng(7)
  n, r = 7, 8
  shared = {"quad": jnp.asarray(rng.normal(size=(n, n)), jnp.float32)}
  batched = {
    "scale": jnp.asarray(rng.uniform(0.5, 1.5, size=(3, n)), jnp.float32),
    "lin": jnp.asarray(rng.normal(size=(3, n)), jnp.float32),
  }
  n_valid = np.array([7, 4, 5], np.int32)
  pairs = np.array(
    [
      [[0, 6], [2, 3], [1, 5]],
      [[0, 3], [1, 2], [2, 3]],
      [[0, 4], [1, 3], [0, 4]],  # two real pairs, padded by repeating pair 0
    ],
    np.int32,
  )
  keys = jax.random.split(jax.random.key(11), 3)
  statics = {"n_players": n, "n_draws": r, "antithetic": antithetic}
  out = shapley.mc_pair_statistics_batch(
    _dict_game,
    shared,
    batched,
    keys,
    jnp.asarray(pairs),
    jnp.asarray(n_valid),
    chunk=chunk,
    **statics,
  )
  for e in range(3):
    ref = shapley.mc_pair_statistics(
      _dict_game,
      {**shared, "scale": batched["scale"][e], "lin": batched["lin"][e]},
      keys[e],
      jnp.asarray(pairs[e]),
      jnp.int32(n_valid[e]),
      chunk=4096,
      **statics,
    )
    assert set(out) == set(ref) == set(shapley.PAIR_INDICES)
    for name, (mu, se) in ref.items():
      assert out[name][0].shape == (3, 3, 2) and out[name][1].shape == (3, 3, 2)
      np.testing.assert_allclose(out[name][0][e], mu, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(out[name][1][e], se, rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(out["SII"][0])).max() > 0  # a non-trivial game


def test_example_groups_respect_the_memory_knob():
  assert shapley.example_groups(4096, 96, 3) == (3, 96)  # all examples in one call
  assert shapley.example_groups(200, 96, 3) == (2, 96)  # 2 per call (+ a remainder of 1)
  assert shapley.example_groups(7, 96, 3) == (1, 7)  # one example per call, chunked by the knob
  assert shapley.example_groups(96, 96, 1) == (1, 96)
  for chunk, per, n in itertools.product((1, 5, 64, 1000), (1, 4, 96), (1, 3, 64)):
    group, per_call = shapley.example_groups(chunk, per, n)
    assert 1 <= group <= n and group * min(per, per_call) <= max(chunk, 1)


def test_common_random_coalitions_follow_the_sii_distribution():
  """Sizes of S are uniform on {0..n-2}, S never holds i or j, and complements are antithetic."""
  n, r = 7, 4000
  pairs = jnp.asarray([[0, 1], [2, 6]], jnp.int32)
  coal = np.asarray(
    shapley.pair_coalitions(jax.random.key(0), pairs, n, n_players=n, n_draws=r, antithetic=True)
  )
  s = coal[:, :, 0]  # [R, P, n]
  assert not s[:, 0, :2].any() and not s[:, 1, [2, 6]].any()
  sizes = s.sum(-1)
  counts = np.bincount(sizes[:, 0], minlength=n - 1)
  assert counts.shape == (n - 1,) and counts.min() > 0.8 * r / (n - 1)
  # Antithetic partner = complement within N∖{i,j}.
  np.testing.assert_array_equal(sizes[0::2] + sizes[1::2], n - 2)
  # The 4 coalitions: S, S+i, S+j, S+ij.
  np.testing.assert_array_equal(coal[:, 0, 3, :2], True)
  np.testing.assert_array_equal(coal[:, 0, 1, 1], False)
  # Padding players (>= n_valid) never join.
  padded = np.asarray(
    shapley.pair_coalitions(jax.random.key(1), pairs, 7, n_players=10, n_draws=8, antithetic=False)
  )
  assert not padded[..., 7:].any()


# --------------------------------------------------------------------------------------------------
# The planted oracle game (DATA.md 3.4).
# --------------------------------------------------------------------------------------------------


def _oracle(setting, seed=0):
  cfg = synthetic.PlantedConfig(
    n_train=4,
    n_val=2,
    n_test=6,
    text_len=8,
    min_text_len=8,
    image_len=4,
    dim=16,
    n_distractors=0,
    setting=setting,
    seed=seed,
    bayes_mc_samples=100,
  )
  data = synthetic.generate(cfg)
  return data["ground_truth"], data["test"]


def _oracle_game(gt, split, index, numpy_path):
  bits = synthetic.sample_bits(split, index)
  n = gt["players"]["n_players"]
  y_hat = np.sign(synthetic.oracle_value(gt, np.ones((1, n), bool), bits)[0]) or 1.0
  if numpy_path:  # the generator's own numpy oracle, through pure_callback
    return games.game_from_numpy(lambda c: y_hat * synthetic.oracle_value(gt, c, bits), n), y_hat
  coef = {t: y_hat * c for t, c in synthetic.oracle_moebius(gt, bits).items()}
  return games.soum_game(coef, n), y_hat


def _pair(gt, kind):
  m = next(m for m in gt["mechanisms"] if m["kind"] == kind)
  return m["text_player"], m["image_player"], m["weight"]


@pytest.mark.parametrize("setting", ["synergy", "redundancy"])
def test_oracle_soum_closed_forms(setting):
  gt, split = _oracle(setting)
  n = gt["players"]["n_players"]  # 12: exact enumeration is cheap
  syn_i, syn_j, w_s = _pair(gt, "synergy")
  red_i, red_j, w_r = _pair(gt, "redundancy")
  comp_i, comp_j, _ = _pair(gt, "complement")
  pairs = np.array([[syn_i, syn_j], [red_i, red_j], [comp_i, comp_j], [1, 8]])
  for index in range(3):
    game, _ = _oracle_game(gt, split, index, numpy_path=True)
    ref, _ = _oracle_game(gt, split, index, numpy_path=False)
    c = shapley.all_coalitions(n)
    np.testing.assert_allclose(np.asarray(game(c)), np.asarray(ref(c)), atol=1e-5)
    ex = shapley.pair_scores(game, pairs, budget=2**n, key=jax.random.key(0))
    m = w_s if setting == "synergy" else w_r  # the pure-setting margin M
    sii, rg = ex.values["SII"], ex.values["RG"]
    if setting == "synergy":
      np.testing.assert_allclose([sii[0], rg[0]], [m, 0.0], atol=1e-5)  # +M, RG 0
      np.testing.assert_allclose(sii[1:], 0.0, atol=1e-5)
    else:
      np.testing.assert_allclose(
        [sii[1], rg[1], ex.values["RG-additive"][1]], [-m, m, m], atol=1e-5
      )  # -M, RG +M, -SII +M
      np.testing.assert_allclose(np.r_[sii[[0, 2, 3]], rg[[0, 2, 3]]], 0.0, atol=1e-5)
    # Monte Carlo on the same game agrees within its standard errors.
    mc = shapley.pair_scores(
      game, pairs, budget=4 * len(pairs) * 256, key=jax.random.key(index), exact=False
    )
    for name in ("SII", "RG"):
      err = np.abs(mc.values[name] - ex.values[name])
      se = mc.std_errors[name]
      # Within 4 SEs, and the SEs small next to the margin (an inflated SE must not pass).
      assert np.all(err <= 4 * se + 1e-6) and np.all(se < 0.1 * m), (name, err, se, m)


def test_oracle_mixed_setting_matches_moebius_closed_form():
  gt, split = _oracle("mixed", seed=1)
  n = gt["players"]["n_players"]
  for index in range(2):
    bits = synthetic.sample_bits(split, index)
    game, y_hat = _oracle_game(gt, split, index, numpy_path=True)
    coef = {t: y_hat * c for t, c in synthetic.oracle_moebius(gt, bits).items()}
    res = shapley.exact_interactions(game, index="SII", max_order=2)
    for t in itertools.combinations(range(n), 2):
      assert res[t] == pytest.approx(_closed_form_sii(coef, t), abs=1e-5)


def test_reference_se_is_calibrated_over_draws_and_references():
  """SII of the marginal game is a crossed mean over R draw units x K references drawn once.

  Over 4000 redraws of both (y = a_r + b_k + e_rk), the SE that includes the references matches
  the spread of the estimate; the engine's SE of the mean game alone (references fixed) does not.
  """
  rng = np.random.default_rng(0)
  reps, r, k = 4000, 32, 4
  y = (
    rng.normal(0, 1.0, (reps, r, 1))  # draws
    + rng.normal(0, 0.5, (reps, 1, k))  # references
    + rng.normal(0, 0.7, (reps, r, k))  # their interaction
  )
  rows = y.mean(2)  # the mean game's per-draw values
  se_mean = rows.std(1, ddof=1) / np.sqrt(r)
  values_k, se_k = y.mean(1), y.std(1, ddof=1) / np.sqrt(r)
  se = shapley.reference_se(se_mean, values_k, se_k)
  spread = y.mean((1, 2)).std(ddof=1)
  assert 0.9 < np.sqrt((se**2).mean()) / spread < 1.1, (np.sqrt((se**2).mean()), spread)
  assert np.sqrt((se_mean**2).mean()) / spread < 0.7  # references fixed: too small (0.61)
  # One reference: nothing to resample.
  np.testing.assert_array_equal(
    shapley.reference_se(se_mean, values_k[:, :1], se_k[:, :1]), se_mean
  )


@pytest.mark.parametrize("ref_sd", [0.2, 0.5, 1.0])
def test_jackknife_se_of_the_redundancy_gap_is_calibrated_over_draws_and_references(ref_sd):
  """RG of the marginal game is a mean over draws of a max of drops of the reference-averaged game:
  not linear, so `reference_se` does not apply. Over 3000 redraws of draws and K = 4 references,
  the jackknife SE over leave-one-out games matches the spread of the estimate; the MC SE with the
  references fixed does not once the references matter."""
  rng = np.random.default_rng(0)
  reps, r, k = 3000, 32, 4
  base = np.array([0.0, 1.0, 1.5, 2.2])  # v(S), v(S+i), v(S+j), v(S+ij): both drops compete
  y = (
    base
    + rng.normal(0, 1.0, (reps, r, 1, 4))  # draws
    + rng.normal(0, ref_sd, (reps, 1, k, 4))  # references
    + rng.normal(0, 0.7, (reps, r, k, 4))  # their interaction
  )

  def rg(v):  # [..., 4] -> the redundancy gap of each draw
    d_i, d_j, d_ij = v[..., 3] - v[..., 2], v[..., 3] - v[..., 1], v[..., 3] - v[..., 0]
    return d_ij - np.maximum(d_i, d_j)

  per_draw = rg(y.mean(2))  # [reps, r]: the mean game's gap per draw
  estimate = per_draw.mean(1)
  se_mean = per_draw.std(1, ddof=1) / np.sqrt(r)
  loo = rg((y.sum(2, keepdims=True) - y) / (k - 1)).mean(1)  # [reps, K]
  se = shapley.jackknife_se(se_mean, loo)
  spread = estimate.std(ddof=1)
  ratio = np.sqrt((se**2).mean()) / spread
  assert 0.9 < ratio < 1.15, ratio
  if ref_sd >= 0.5:
    assert np.sqrt((se_mean**2).mean()) / spread < 0.7  # references fixed: too small
  np.testing.assert_array_equal(shapley.jackknife_se(se_mean, loo[:, :1]), se_mean)
