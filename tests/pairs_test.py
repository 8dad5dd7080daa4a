"""Candidate pairs (topk / random / all) and pair-level masking with a matched random control."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_fli2moe

from flmoe_jax.explain import masking
from flmoe_jax.probes import games
from flmoe_jax.probes import pairs as pairs_lib
from flmoe_jax.probes.games import PlayerMap, ProbeError

NAMES = ("text", "image")


def _pm(n_text=4, n_image=3):
  return PlayerMap.from_masks(
    [np.r_[False, np.ones(n_text, bool), False], np.ones(n_image, bool)], NAMES
  )


def test_cross_modal_topk_random_and_padding():
  pm = _pm()
  allp = pairs_lib.cross_modal_pairs(pm)
  assert allp.shape == (4 * 3, 2)
  assert (pm.modality[allp[:, 0]] == 0).all() and (pm.modality[allp[:, 1]] == 1).all()
  scores = [np.array([9.0, 0.1, 5.0, 0.2, 7.0, 9.0]), np.array([0.0, 3.0, 1.0])]  # pos 0/5 ignored
  top = pairs_lib.topk_pairs(pm, scores, k=2)
  # text: positions 4 (7.0) then 2 (5.0); image: 1 then 2.
  got = [(int(pm.position[i]), int(pm.position[j])) for i, j in top]
  assert got == [(4, 1), (4, 2), (2, 1), (2, 2)]
  assert len(pairs_lib.topk_pairs(pm, scores, k=10)) == 12  # capped by the players
  rng = np.random.default_rng(0)
  r = pairs_lib.random_pairs(pm, 5, rng)
  assert len(r) == 5 and len({tuple(p) for p in r}) == 5
  assert len(pairs_lib.random_pairs(pm, 100, rng)) == 12
  padded, valid = pairs_lib.pad_pairs(r, 8)
  assert padded.shape == (8, 2) and valid.sum() == 5
  with pytest.raises(ProbeError):
    pairs_lib.pad_pairs(allp, 4)
  with pytest.raises(ProbeError):
    pairs_lib.topk_pairs(pm, scores, k=0)


def test_random_pairs_are_uniform():
  pm = _pm(3, 3)
  rng = np.random.default_rng(1)
  counts = np.zeros((9,))
  allp = [tuple(p) for p in pairs_lib.cross_modal_pairs(pm)]
  for _ in range(3000):
    for p in pairs_lib.random_pairs(pm, 2, rng):
      counts[allp.index(tuple(p))] += 1
  expected = 3000 * 2 / 9
  assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


def test_masking_coalitions_rank_union_and_matched_random_counts():
  pm = _pm(5, 4)  # players 0-4 text, 5-8 image
  mod, _ = pm.padded(12)
  cand = np.array([[0, 5], [0, 6], [1, 5], [2, 7], [3, 8]], np.int32)  # text token 4: no pair
  order = np.array([0, 1, 2, 3, 4])
  keep, counts = pairs_lib.masking_coalitions(
    mod,
    pm.n_players,
    cand,
    order,
    [1, 2, 3, 10],
    repeats=50,
    rng=np.random.default_rng(0),
    n_modalities=2,
  )
  assert keep.shape == (4, 101, 12)
  masked = ~keep[:, 0]
  assert set(np.flatnonzero(masked[0])) == {0, 5}
  assert set(np.flatnonzero(masked[1])) == {0, 5, 6}  # pairs share token 0: 3 unique tokens
  assert set(np.flatnonzero(masked[2])) == {0, 1, 5, 6}
  assert masked[3, :9].sum() == 8 and not masked[3, 9:].any()  # budget > candidates: all of them
  np.testing.assert_array_equal(counts[:3], [[1, 1], [1, 2], [2, 2]])
  pool, every = ~keep[:, 1:51], ~keep[:, 51:]
  for rand in (pool, every):
    for b in range(4):  # every repeat masks the same unique-token counts per modality
      np.testing.assert_array_equal(rand[b][:, :5].sum(-1), counts[b, 0])
      np.testing.assert_array_equal(rand[b][:, 5:9].sum(-1), counts[b, 1])
      assert not rand[b][:, 9:].any()  # padding players are never masked
  # The matched control draws from the candidates' tokens only: text token 4 is in no pair.
  assert not pool[:, :, 4].any() and pool[0][:, :4].any(0).all()
  # The second control draws from every token of the modality.
  assert every[0][:, :5].any(0).all()


def test_first_masked_budget():
  first = pairs_lib.first_masked_budget(np.array([[0, 3], [1, 3], [0, 4]]), np.array([1, 2, 0]), 6)
  np.testing.assert_array_equal(first[:5], [2, 1, np.iinfo(np.int32).max, 1, 2])


def test_attribution_is_zero_for_tokens_equal_to_the_fill():
  model = tiny_fli2moe((4, 4))
  rng = np.random.default_rng(0)
  xs = [
    rng.normal(size=(1, 5, 4)).astype(np.float32),
    rng.normal(size=(1, 3, 4)).astype(np.float32),
  ]
  means = [xs[0][0, 2].copy(), rng.normal(size=4).astype(np.float32)]  # token 2 == the mean
  game = games.model_game(
    model,
    xs,
    [np.ones((1, 5), bool), np.ones((1, 3), bool)],
    kinds=("tokens", "patches"),
    task_type="binary",
    means=means,
    expert="syn",
  )
  attr = pairs_lib.token_attribution(game.fn, game.params)
  assert attr[0].shape == (5,) and attr[1].shape == (3,)
  assert float(attr[0][2]) == pytest.approx(0.0, abs=1e-6)
  assert float(jnp.abs(attr[1]).sum()) > 0


def test_masked_logits_equal_direct_fill():
  model = tiny_fli2moe((4, 4), seed=1)
  rng = np.random.default_rng(1)
  xs = [
    rng.normal(size=(1, 5, 4)).astype(np.float32),
    rng.normal(size=(1, 3, 4)).astype(np.float32),
  ]
  masks = [np.ones((1, 5), bool), np.ones((1, 3), bool)]
  means = [np.zeros(4, np.float32)] * 2
  game = games.model_game(
    model, xs, masks, kinds=("tokens", "patches"), task_type="binary", means=means, expert="mixture"
  )
  coal = jnp.array([[True, False, True, True, True, False, True]])  # drop text pos 2, patch 1
  logits = pairs_lib.masked_logits(game.fn, game.params, coal)
  hs = model.project([jnp.asarray(x) for x in xs])
  keep = [jnp.array([[1, 1, 0, 1, 1]], bool), jnp.array([[1, 0, 1]], bool)]
  direct = model.forward_projected(
    masking.apply_fill(hs, keep, game.params["fills"]), [jnp.asarray(m) for m in masks]
  ).logits
  np.testing.assert_allclose(np.asarray(logits), np.asarray(direct), atol=1e-5)


@pytest.mark.parametrize("chunk", [3, 64])  # one example per call, chunked; both in one call
def test_masked_logits_batch_equals_per_example(chunk):
  model = tiny_fli2moe((4, 4), seed=2)
  rng = np.random.default_rng(2)
  n_max = 7
  shared, batched, coals, refs = None, [], [], []
  for text_len in (5, 3):  # 7 and 5 players
    xs = [
      rng.normal(size=(1, 5, 4)).astype(np.float32),
      rng.normal(size=(1, 3, 4)).astype(np.float32),
    ]
    masks = [np.arange(5)[None] < text_len, np.ones((1, 3), bool)]
    game = games.model_game(
      model,
      xs,
      masks,
      kinds=("tokens", "patches"),
      task_type="binary",
      means=[np.zeros(4, np.float32)] * 2,
      expert="mixture",
    )
    mod, pos = game.players.padded(n_max)
    params = {
      **game.params,
      "player_modality": jnp.asarray(mod),
      "player_position": jnp.asarray(pos),
    }
    coal = jnp.asarray(rng.random((5, n_max)) < 0.5)
    refs.append(np.asarray(pairs_lib.masked_logits(game.fn, params, coal)))
    coals.append(coal)
    shared = {"state": params["state"], "fills": params["fills"]}
    batched.append({k: params[k] for k in ("hs", "masks", "player_modality", "player_position")})
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *batched)
  out = pairs_lib.masked_logits_batch(game.fn, shared, stacked, jnp.stack(coals), chunk=chunk)
  assert out.shape == (2, 5, 2)
  np.testing.assert_allclose(np.asarray(out), np.stack(refs), rtol=1e-5, atol=1e-5)


@dataclasses.dataclass(frozen=True)
class _PairwiseGame:
  """v(S) = w (a [t1] + b [t2][p0] + c max([t3], [p2])) per example: known Shapley values.

  Players are (modality, position) over 4 text and 3 image positions; [x] = 1 when present.
  """

  lengths: tuple[int, ...] = (4, 3)

  def __call__(self, coalitions, params):
    mod, pos = params["player_modality"], params["player_position"]

    def present(m, p):  # [C] whether the player (m, p) is in each coalition
      return coalitions[:, jnp.argmax((mod == m) & (pos == p))].astype(jnp.float32)

    v = 1.5 * present(0, 1) + 2.0 * present(0, 2) * present(1, 0)
    v = v + 0.8 * jnp.maximum(present(0, 3), present(1, 2))
    return v[:, None] * params["w"][None, :]  # [C, B]


def test_token_shapley_is_exact_on_pairwise_games():
  # Antithetic orders are exact for games of single and pairwise terms: of an order and its reverse,
  # exactly one puts the partner first. Each interaction is split equally between its two players.
  w = jnp.array([1.0, -2.0])
  maps = pairs_lib.token_shapley(_PairwiseGame(), {"w": w}, jax.random.key(3), n_orders=6, chunk=5)
  assert [m.shape for m in maps] == [(2, 4), (2, 3)]
  want_text = np.array([0.0, 1.5, 1.0, 0.4])
  want_image = np.array([1.0, 0.0, 0.4])
  for b, scale in enumerate(np.abs(np.asarray(w))):
    np.testing.assert_allclose(np.asarray(maps[0][b]), scale * want_text, atol=1e-6)
    np.testing.assert_allclose(np.asarray(maps[1][b]), scale * want_image, atol=1e-6)
