"""Games: strict player maps, model games built on the shared masking operator, and clear errors."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_fli2moe
from flax import nnx

from flmoe_jax.explain import masking, targets
from flmoe_jax.probes import games, results, shapley
from flmoe_jax.probes.games import PlayerMap, ProbeError

NAMES = ("text", "image")


# --------------------------------------------------------------------------------------------------
# Player maps.
# --------------------------------------------------------------------------------------------------


def test_player_map_from_masks_skips_bos_and_padding():
  valid = [np.array([1, 1, 1, 1, 0, 0], bool), np.ones(4, bool)]
  cand = [
    np.asarray(c[0])
    for c in masking.candidate_masks([v[None] for v in valid], ("tokens", "patches"))
  ]
  pm = PlayerMap.from_masks(cand, NAMES)
  assert pm.n_players == 3 + 4
  np.testing.assert_array_equal(pm.modality, [0, 0, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(pm.position, [1, 2, 3, 0, 1, 2, 3])
  assert pm.player("image", 2) == 5 and pm.player(0, 1) == 0
  with pytest.raises(ProbeError, match="not a player"):
    pm.player("text", 0)  # <s>
  mod, pos = pm.padded(10)
  np.testing.assert_array_equal(mod[7:], -1)


@pytest.mark.parametrize(
  "modality, position, match",
  [
    ([0, 0], [1, 2], "modality 'image' has no player"),
    ([0, 1, 1], [1, 0, 9], "out of range"),
    ([0, 1, 1], [1, 2, 2], "same token is two players"),
    ([0, 1, 0], [1, 0, 2], "contiguous and ordered"),
    ([0, 1, 2], [1, 0, 0], "modality ids"),
  ],
)
def test_player_map_validation(modality, position, match):
  pm = PlayerMap(np.array(modality), np.array(position), NAMES, (6, 4))
  with pytest.raises(ProbeError, match=match):
    pm.validate()


def test_player_on_padding_is_refused():
  pm = PlayerMap(np.array([0, 1]), np.array([5, 0]), NAMES, (6, 4))
  with pytest.raises(ProbeError, match="padding"):
    pm.validate([np.array([1, 1, 1, 0, 0, 0], bool), np.ones(4, bool)])


def test_keep_masks_scatter_players_and_drop_padding_players():
  pm = PlayerMap(np.array([0, 0, 1]), np.array([1, 3, 2]), NAMES, (5, 3))
  mod, pos = pm.padded(5)
  coal = jnp.array([[True, False, False, True, True], [False, True, True, False, False]])
  keep = games.keep_masks(coal, jnp.asarray(mod), jnp.asarray(pos), (5, 3))
  np.testing.assert_array_equal(keep[0], [[1, 1, 1, 0, 1], [1, 0, 1, 1, 1]])  # non-players kept
  np.testing.assert_array_equal(keep[1], [[1, 1, 0], [1, 1, 1]])


# --------------------------------------------------------------------------------------------------
# Bad games and bad arguments fail before any long run.
# --------------------------------------------------------------------------------------------------


def _counting_game(n, out=lambda c: c.sum(-1).astype(jnp.float32)):
  calls = []

  def host(c):
    calls.append(c.shape[0])
    return np.asarray(out(jnp.asarray(c)))

  return games.game_from_numpy(host, n), calls


def test_wrong_shape_nan_and_failing_value_functions():
  bad_shape = games.game_from_value_fn(lambda c: c.sum(), 4)
  with pytest.raises(ProbeError, match=r"must map bool \[C, 4\] to float \[C, ...\]"):
    shapley.sii(bad_shape, [[0, 1]], budget=1000, key=jax.random.key(0))
  nan = games.game_from_value_fn(lambda c: jnp.where(c[:, 0], jnp.nan, 1.0), 4)
  with pytest.raises(ProbeError, match="NaN"):
    shapley.sii(nan, [[0, 1]], budget=1000, key=jax.random.key(0), exact=False)
  with pytest.raises(ProbeError, match="NaN"):
    shapley.exact_interactions(nan, index="SII", max_order=2)
  boom = games.game_from_value_fn(lambda c: c @ jnp.ones(7), 4)
  with pytest.raises(ProbeError, match="failed on coalitions"):
    shapley.sii(boom, [[0, 1]], budget=1000, key=jax.random.key(0))
  ints = games.game_from_value_fn(lambda c: c.sum(-1), 4)
  with pytest.raises(ProbeError, match="dtype"):
    shapley.sii(ints, [[0, 1]], budget=1000, key=jax.random.key(0))


def test_argument_errors_never_evaluate_the_game():
  game, calls = _counting_game(30)
  key = jax.random.key(0)
  cases = [
    (dict(pairs=[[0, 30]], budget=10**5, key=key), "out of range"),
    (dict(pairs=[[-1, 2]], budget=10**5, key=key), "out of range"),
    (dict(pairs=[[3, 3]], budget=10**5, key=key), "two different players"),
    (dict(pairs=[0, 1], budget=10**5, key=key), r"\[P, 2\]"),
    (dict(pairs=[[0, 1]] * 100, budget=1000, key=key), "budget 1000 is too small for 100 pairs"),
    (dict(pairs=[[0, 1]], budget=10**5, key=None), "PRNG key is required"),
    (
      dict(pairs=[[0, 1]], budget=10**5, key=key, max_coalitions_per_call=0),
      "cannot fit one coalition",
    ),
  ]
  for kwargs, match in cases:
    with pytest.raises(ProbeError, match=match):
      shapley.pair_scores(game, **kwargs)
  assert calls == []  # nothing ran


def test_chunking_does_not_change_results():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(12, 12)), jnp.float32)
  game = games.game_from_value_fn(lambda c: jnp.einsum("ci,ij,cj->c", c * 1.0, w, c * 1.0), 12)
  pairs = [[0, 1], [4, 9], [11, 2]]
  a = shapley.pair_scores(game, pairs, budget=4 * 3 * 32, key=jax.random.key(5), exact=False)
  b = shapley.pair_scores(
    game, pairs, budget=4 * 3 * 32, key=jax.random.key(5), exact=False, max_coalitions_per_call=7
  )
  for name in a.values:
    np.testing.assert_allclose(a.values[name], b.values[name], atol=1e-5)
  # A quadratic game: SII(i, j) = w_ij + w_ji exactly, for every draw.
  np.testing.assert_allclose(a.values["SII"], [w[i, j] + w[j, i] for i, j in pairs], atol=1e-5)
  assert a.budget == 4 * 3 * 32 and a.n_samples == 32 and not a.exact
  # Results round-trip through JSON.
  back = type(a).from_dict(json.loads(a.to_json()))
  np.testing.assert_allclose(back.values["RG"], a.values["RG"])


def test_results_json_keys_and_round_trip():
  iv = shapley.exact_interactions(
    games.game_from_value_fn(lambda c: (c[:, 0] & c[:, 1]).astype(jnp.float32), 3),
    index="SII",
    max_order=2,
  )
  ps = results.PairScores(
    pairs=np.array([[0, 1], [1, 2]]),
    values={"SII": np.array([1.0, 2.0]), "RG": np.array([0.5, -1.0])},
    std_errors={"SII": np.zeros(2), "RG": np.array([0.1, 0.2])},
    baseline_value=np.array(0.0),
    grand_value=np.array(1.5),
    n_players=3,
    budget=64,
    n_samples=8,
    estimator="monte-carlo",
    seed=[1, 2],
    exact=False,
    outputs=("logit",),
  )
  for res, kind in ((iv, "interaction_values"), (ps, "pair_scores")):
    d = json.loads(res.to_json())
    fields = [f.name for f in dataclasses.fields(res)]
    assert list(d) == ["kind", *fields] and d["kind"] == kind
    back = type(res).from_dict(d)
    assert back.to_json() == res.to_json()
    assert back.outputs == res.outputs and isinstance(back.outputs, tuple)
    del d["outputs"]  # files written before `outputs` existed
    assert type(res).from_dict(d).outputs == ()
    del d["budget"]
    with pytest.raises(KeyError, match="budget"):
      type(res).from_dict(d)
  back = results.InteractionValues.from_dict(iv.to_dict())
  assert back.interactions == iv.interactions and back[(1, 0)] == pytest.approx(iv[(0, 1)])
  assert back.values.dtype == np.float64
  back = results.PairScores.from_dict(ps.to_dict())
  assert back.pairs.dtype == np.int64 and back.pairs.shape == (2, 2)
  assert back.values["RG"].tolist() == [0.5, -1.0] and back.seed == [1, 2]


# --------------------------------------------------------------------------------------------------
# Model games.
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
  model = tiny_fli2moe((6, 5), num_classes=3)
  rng = np.random.default_rng(0)
  xs = [
    rng.normal(size=(2, 5, 6)).astype(np.float32),
    rng.normal(size=(2, 3, 5)).astype(np.float32),
  ]
  masks = [np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool), np.ones((2, 3), bool)]
  means = [rng.normal(size=6).astype(np.float32), rng.normal(size=5).astype(np.float32)]
  return model, xs, masks, means


def _game(tiny, b=slice(0, 1), **kw):
  model, xs, masks, means = tiny
  return games.model_game(
    model,
    [x[b] for x in xs],
    [m[b] for m in masks],
    kinds=("tokens", "patches"),
    task_type="multiclass",
    modality_names=NAMES,
    **{"means": means, **kw},
  )


def test_model_game_endpoints_are_clean_and_fully_filled_inputs(tiny):
  model, xs, masks, means = tiny
  game = _game(tiny, expert="syn", score=("logit", "prob"))
  assert game.n_players == 3 + 3 and game.outputs == ("logit", "prob")
  v = np.asarray(game(jnp.stack([jnp.zeros(6, bool), jnp.ones(6, bool)])))
  assert v.shape == (2, 2)
  hs = model.project([jnp.asarray(x[:1]) for x in xs])
  out = model.forward_projected(hs, [jnp.asarray(m[:1]) for m in masks])
  target = targets.target_mask(out.logits, "multiclass")
  syn = model.expert_names.index("syn")
  np.testing.assert_allclose(
    v[1, 0], targets.target_score(out.expert_logits[:, syn], target, "multiclass")[0], atol=1e-5
  )
  # Empty coalition = every candidate token filled with the projected train mean (<s>, pad kept).
  fills = masking.fill_vectors(model, means, "mean")
  cand = masking.candidate_masks([jnp.asarray(m[:1]) for m in masks], ("tokens", "patches"))
  filled = masking.apply_fill(hs, [~c for c in cand], fills)
  out0 = model.forward_projected(filled, [jnp.asarray(m[:1]) for m in masks])
  np.testing.assert_allclose(
    v[0, 1],
    targets.target_score(out0.expert_logits[:, syn], target, "multiclass", score="prob")[0],
    atol=1e-5,
  )


def test_model_game_mixture_batch_and_zero_fill(tiny):
  mix = _game(tiny, b=slice(0, 2), expert="mixture")
  assert mix.n_players == 3 + 3  # positions that are candidates in every example
  v = np.asarray(mix(jnp.ones((3, 6), bool)))
  assert v.shape == (3, 2)  # [C, B]
  zero = _game(tiny, expert="red", fill="zero")
  mean = _game(tiny, expert="red")
  e = jnp.zeros((1, 6), bool)
  assert not np.allclose(np.asarray(zero(e)), np.asarray(mean(e)))
  res = shapley.pair_scores(
    _game(tiny, expert=2), [[0, 3], [2, 5]], budget=4 * 2 * 16, key=jax.random.key(0), exact=False
  )
  assert res.values["SII"].shape == (2,) and np.isfinite(res.std_errors["SII"]).all()
  with pytest.raises(ProbeError, match="expert 'nope'"):
    _game(tiny, expert="nope")
  with pytest.raises(ProbeError, match="score"):
    _game(tiny, score="log_odds")
  with pytest.raises(ProbeError, match="needs the store's means"):
    _game(tiny, means=None)
  # The zero fill needs no means: the same game with or without them.
  no_means = _game(tiny, expert="red", fill="zero", means=None)
  np.testing.assert_allclose(np.asarray(no_means(e)), np.asarray(zero(e)), atol=1e-6)


class _ProductExpert(nnx.Module):
  """An expert whose log-odds is w * b1 * b2, the ±1 bits in the first feature of text token 0 and
  patch 0: a planted XOR, with nothing else in the function."""

  def __init__(self, w: float):
    self.w = w

  def __call__(self, hs, masks):
    z = self.w * hs[0][..., 0, 0] * hs[1][..., 0, 0]
    return (jnp.stack([jnp.zeros_like(z), z], -1),)


def test_marginal_sii_of_a_planted_xor_counts_the_references_opposite_in_both_bits():
  # Per reference r, the pair's interaction is w (x1 - r1)(x2 - r2): 4 w x1 x2 when r differs from the
  # example in both bits, else 0. So the marginal SII of the example is 4 w x1 x2 times the share of
  # such references, and with the references of a small draw it vanishes in any bit state whose
  # opposite state no reference holds (docs/probes.md "Fill": why K is 32 by default).
  w = 1.5
  graph, state = nnx.split(_ProductExpert(w))
  fn = games.ModelValueFn(graph, "expert", "multiclass", ("logodds",), lengths=(1, 1))
  ref_bits = np.array([[1, -1], [1, -1], [1, -1], [1, 1], [1, -1], [-1, -1], [1, 1], [1, 1]])
  refs = [jnp.asarray(np.pad(ref_bits[:, m, None, None], ((0, 0), (0, 0), (0, 3)))) for m in (0, 1)]
  coalitions = jnp.array([[True, True], [True, False], [False, True], [False, False]])
  sii_by_state = {}
  for x in ([1, 1], [1, -1], [-1, 1], [-1, -1]):
    params = dict(
      state=state,
      hs=[jnp.asarray([[x[m], 0.0, 0.0, 0.0]], jnp.float32) for m in (0, 1)],
      masks=[jnp.ones(1, bool)] * 2,
      fills=refs,
      target=jnp.array([0.0, 1.0]),
      player_modality=jnp.array([0, 1]),
      player_position=jnp.array([0, 0]),
    )
    v = np.asarray(fn(coalitions, params))
    sii = v[0] - v[1] - v[2] + v[3]
    opposite = np.mean((ref_bits[:, 0] != x[0]) & (ref_bits[:, 1] != x[1]))
    np.testing.assert_allclose(sii, 4 * w * x[0] * x[1] * opposite, atol=1e-5)
    sii_by_state[tuple(x)] = float(sii)
  # No reference is in state (-1, +1), so an example in state (+1, -1) sees no interaction of the
  # planted pair at all, while the three other states keep at least 1/8 of 4 w.
  assert abs(sii_by_state[(1, -1)]) < 1e-5
  assert min(abs(v) for k, v in sii_by_state.items() if k != (1, -1)) >= 4 * w / 8 - 1e-5


def test_marginal_game_is_the_mean_over_its_references(tiny):
  # The marginal fill: absent tokens take a reference example's tokens at their positions; the value
  # is the mean over the K references of the single-reference games.
  model, _, _, means = tiny
  rng = np.random.default_rng(1)
  ref_x = [
    rng.normal(size=(3, 5, 6)).astype(np.float32),
    rng.normal(size=(3, 3, 5)).astype(np.float32),
  ]
  ref_m = [np.array([[1] * 5, [1, 1, 1, 0, 0], [1] * 5], bool), np.ones((3, 3), bool)]
  refs = masking.reference_fills(model, ref_x, ref_m, means)
  assert [tuple(r.shape) for r in refs] == [(3, 5, model.hidden_dim), (3, 3, model.hidden_dim)]
  mean = masking.fill_vectors(model, means, "mean")
  np.testing.assert_allclose(refs[0][1, 3], mean[0], atol=1e-6)  # a reference's padding: mean fill
  np.testing.assert_allclose(
    refs[0][0, 3], model.project([jnp.asarray(x) for x in ref_x])[0][0, 3], atol=1e-6
  )
  coalitions = jnp.asarray(rng.random((7, 6)) < 0.5).at[0].set(True).at[1].set(False)
  for b in (slice(0, 1), slice(0, 2)):  # one example ([C]) and a batch ([C, B])
    marginal = np.asarray(_game(tiny, b=b, expert="syn", fill=refs)(coalitions))
    each = [
      np.asarray(_game(tiny, b=b, expert="syn", fill=[r[k] for r in refs])(coalitions))
      for k in range(3)
    ]
    np.testing.assert_allclose(marginal, np.mean(each, 0), atol=1e-5)
    assert not np.allclose(
      each[0][1], each[1][1]
    )  # the references do differ on the empty coalition
    # The grand coalition fills nothing: the same value as the mean-fill game.
    np.testing.assert_allclose(
      marginal[0], np.asarray(_game(tiny, b=b, expert="syn")(coalitions))[0], atol=1e-5
    )
  # Per reference (what the probe's SEs need): per scale, the mean, each reference, then the mean
  # over the references but one (the jackknife's games).
  two = _game(tiny, expert="syn", fill=refs, score=("logit", "prob"))
  per = dataclasses.replace(two.fn, per_reference=True)
  v = np.asarray(per(coalitions, two.params))
  assert v.shape == (7, 2 * (1 + 2 * 3))
  for si, s in enumerate(("logit", "prob")):
    block = v[:, si * 7 : (si + 1) * 7]
    np.testing.assert_allclose(block[:, 0], np.asarray(two(coalitions))[:, si], atol=1e-6)
    each = [
      np.asarray(_game(tiny, expert="syn", fill=[r[k] for r in refs], score=s)(coalitions))
      for k in range(3)
    ]
    for k in range(3):
      np.testing.assert_allclose(block[:, 1 + k], each[k], atol=1e-5)
      others = [each[o] for o in range(3) if o != k]
      np.testing.assert_allclose(block[:, 4 + k], np.mean(others, 0), atol=1e-5)


def test_model_games_of_many_examples_share_one_compile(tiny):
  """The pipeline's contract: only params change between examples, so one compile per shape."""
  g0, g1 = _game(tiny, b=slice(0, 1)), _game(tiny, b=slice(1, 2))
  # Different player counts (3 vs 4 text players): pad to a common width.
  n_max = 4 + 3
  params = []
  for g in (g0, g1):
    mod, pos = g.players.padded(n_max)
    params.append(
      {**g.params, "player_modality": jnp.asarray(mod), "player_position": jnp.asarray(pos)}
    )
  before = shapley.mc_pair_statistics._cache_size()
  for g, p in zip((g0, g1), params):
    shapley.mc_pair_statistics(
      g.fn,
      p,
      jax.random.key(0),
      jnp.asarray([[0, 4], [1, 5]]),
      jnp.int32(g.n_players),
      n_players=n_max,
      n_draws=4,
      antithetic=True,
      chunk=64,
    )
  assert shapley.mc_pair_statistics._cache_size() - before == 1


def test_model_game_of_the_dense_baseline():
  from flmoe_jax.models import DenseTransformer, ModelConfig

  model = DenseTransformer(
    ModelConfig(
      input_dims=(4, 4), num_classes=2, hidden_dim=8, num_heads=2, num_layers=1, dropout=0.0
    ),
    rngs=nnx.Rngs(0),
  )
  rng = np.random.default_rng(0)
  xs = [
    rng.normal(size=(1, 4, 4)).astype(np.float32),
    rng.normal(size=(1, 2, 4)).astype(np.float32),
  ]
  masks = [np.ones((1, 4), bool), np.ones((1, 2), bool)]
  means = [np.zeros(4, np.float32)] * 2
  means = [np.full(4, 0.3, np.float32), np.full(4, -0.2, np.float32)]
  target = jnp.asarray([[0.0, 1.0]])
  kw = dict(kinds=("tokens", "patches"), task_type="binary", means=means, target=target)
  game = games.model_game(model, xs, masks, expert="dense", score="logodds", **kw)
  c = np.asarray(jax.random.bernoulli(jax.random.key(0), 0.5, (6, game.n_players)))
  # The same values the slow way: write the train mean into each absent token's raw features and
  # run the model's public forward; the log-odds of class 1 is l_1 - l_0.
  want = []
  for row in c:
    filled = [x.copy() for x in xs]
    for p in np.flatnonzero(~row):
      m, t = game.players.modality[p], game.players.position[p]
      filled[m][0, t] = means[m]
    logits = np.asarray(model(filled, masks).logits)[0]
    want.append(logits[1] - logits[0])
  np.testing.assert_allclose(np.asarray(game(jnp.asarray(c))), want, rtol=1e-4, atol=1e-5)
  assert game.n_players == 3 + 2  # text without <s>, every patch
  with pytest.raises(ProbeError, match="expert 'syn'"):
    games.model_game(model, xs, masks, expert="syn", **kw)


def test_log_odds_score_is_shift_invariant_and_the_logit_is_not():
  """Softmax ignores a shift common to all classes; so must a score read from a softmax head."""
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  target = jax.nn.one_hot(jnp.asarray([0, 2, 1, 1, 0]), 3)
  shift = jnp.asarray(rng.normal(size=(5, 1)) * 3.0, jnp.float32)
  lo = targets.target_score(logits, target, "multiclass", score="logodds")
  np.testing.assert_allclose(
    lo, targets.target_score(logits + shift, target, "multiclass", score="logodds"), atol=1e-5
  )
  # Against the closed form: l_c - log sum_{k != c} exp(l_k).
  x, c = np.asarray(logits), np.array([0, 2, 1, 1, 0])
  others = [np.log(np.exp(np.delete(x[i], c[i])).sum()) for i in range(5)]
  np.testing.assert_allclose(lo, x[np.arange(5), c] - np.array(others), rtol=1e-5)
  # The log-probability, l_c - log sum_k exp(l_k), is shift-invariant too.
  lp = targets.target_score(logits, target, "multiclass", score="logprob")
  lse = np.log(np.exp(x).sum(-1))
  np.testing.assert_allclose(lp, x[np.arange(5), c] - lse, rtol=1e-5)
  np.testing.assert_allclose(
    lp, targets.target_score(logits + shift, target, "multiclass", score="logprob"), atol=1e-5
  )
  # The raw logit moves with the shift (what the log-odds scale removes).
  moved = targets.target_score(logits + shift, target, "multiclass") - targets.target_score(
    logits, target, "multiclass"
  )
  np.testing.assert_allclose(moved, shift[:, 0], atol=1e-5)
  # Two classes: log(p / (1 - p)); multilabel: the target logits themselves.
  two = logits[:, :2]
  p = np.asarray(targets.target_score(two, target[:, :2], "binary", score="prob"))
  keep = p > 0  # a probability that underflows to 0 has no finite log-odds to compare
  np.testing.assert_allclose(
    np.asarray(targets.target_score(two, target[:, :2], "binary", score="logodds"))[keep],
    np.log(p[keep] / (1 - p[keep])),
    rtol=1e-4,
  )
  np.testing.assert_allclose(
    targets.target_score(logits, target, "multilabel", score="logodds"),
    targets.target_score(logits, target, "multilabel", score="logit"),
  )


def test_log_probability_keeps_the_redundancy_gap_of_a_saturated_model():
  """RG of a near-certain expert: float32 log-probabilities give its float64 value, probabilities do not.

  The red expert's head is scaled and biased towards class 0 until the log-odds of that class lies
  in [18, 18 + ~20] on every coalition (p >= 1 - 1.5e-8, which is 1.0 in float32). The exact RG of
  every cross-modal pair is computed from the game's float32 values on the `prob` and `logprob`
  scales, and in float64 from its log-odds (accurate in float32: a difference of moderate logits).
  """
  model = tiny_fli2moe((4, 4))
  rng = np.random.default_rng(1)
  xs = [
    rng.normal(size=(1, 5, 4)).astype(np.float32),
    rng.normal(size=(1, 4, 4)).astype(np.float32),
  ]
  masks = [np.ones((1, 5), bool), np.ones((1, 4), bool)]  # 4 text players (no <s>) + 4 patches
  means = [np.zeros(4, np.float32)] * 2

  def values(m):
    game = games.model_game(
      m, xs, masks, kinds=("tokens", "patches"), task_type="binary", expert="red",
      score=("prob", "logprob", "logodds"), means=means, modality_names=NAMES,
      target=jnp.asarray([[1.0, 0.0]]),
    )  # fmt: skip
    return shapley.exact_values(game).astype(np.float64), game.players

  lo = values(model)[0][:, 2]
  head, e = model.experts.stacked.head, model.expert_names.index("red")
  k = 5.0 / lo.std()  # the log-odds of two classes is linear in the head: k * lo + c
  c = 18.0 - k * lo.min()
  kernel, bias = np.array(head.kernel[...]), np.array(head.bias[...])
  kernel[e], bias[e] = k * kernel[e], k * bias[e] + np.array([c, 0.0])
  head.kernel[...], head.bias[...] = jnp.asarray(kernel), jnp.asarray(bias)
  v, players = values(model)
  assert v[:, 2].min() > 17.9 and (v[:, 0] == 1.0).all()  # every probability is 1.0 in float32
  truth_lo = v[:, 2]
  truth = {"prob": 1 / (1 + np.exp(-truth_lo)), "logprob": -np.log1p(np.exp(-truth_lo))}
  pairs = np.array([(i, j) for i in players.players_of(0) for j in players.players_of(1)])
  n = players.n_players
  rg = {
    s: (
      shapley._exact_pair_stats(v[:, si], n, pairs)["RG"],
      shapley._exact_pair_stats(truth[s], n, pairs)["RG"],
    )
    for si, s in enumerate(("prob", "logprob"))
  }
  got, want = rg["logprob"]
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-12)
  np.testing.assert_array_equal(np.argsort(-got), np.argsort(-want))  # the same ranking
  got, want = rg["prob"]
  assert np.abs(got - want).max() > 0.5 * np.abs(want).max()  # rounding noise, not the RG
