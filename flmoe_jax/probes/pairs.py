"""Candidate cross-modal pairs (docs/method.md 5.4) and pair-level masking (docs/method.md 5.5).

Candidates (one feature per modality, never `<s>` or padding):
  * `topk`: the top-k tokens of each modality by the expert's attribution map x the top-k of the
    other modality (k·k pairs per modality pair);
  * `random`: a uniform random subset of all cross-modal pairs (the non-circular alternative);
  * `all`: every cross-modal pair (small inputs only).
`topk_pairs` takes any per-token score map: the pipeline uses the explanation pipeline's
`flmoe_jax.explain.attribute` maps (attention x gradient rollout, integrated gradients; docs/method.md
5.4), `token_attribution` here, |gradient x (input - fill)| of the expert's target logit per token (the
first-order Taylor estimate of what mean-filling that token changes), or `token_shapley`, each
token's |Shapley value| in the probe's own game (Monte Carlo over orders).

Pair masking: for budget b, mask both members of the b top-ranked pairs (the union of their tokens)
in the full model; the control masks the same number of unique tokens per modality chosen uniformly
at random among that modality's players (= b random pairs with matched unique-token counts and the
same overlap structure), `repeats` times.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flmoe_jax import choices
from flmoe_jax.explain import masking, targets
from flmoe_jax.probes import shapley
from flmoe_jax.probes.games import ModelValueFn, PlayerMap, ProbeError, keep_masks

Array = jax.Array
PAIR_MODES = choices.PAIR_MODES


# --------------------------------------------------------------------------------------------------
# Candidate pairs.
# --------------------------------------------------------------------------------------------------


def cross_modal_pairs(players: PlayerMap) -> np.ndarray:
  """Every cross-modal pair (i < j as player ids), int32 [P, 2], modality pairs in order (a < b)."""
  out = []
  m_count = len(players.modality_names)
  for a in range(m_count):
    for b in range(a + 1, m_count):
      pa, pb = players.players_of(a), players.players_of(b)
      out.append(np.stack(np.meshgrid(pa, pb, indexing="ij"), -1).reshape(-1, 2))
  return np.concatenate(out).astype(np.int32)


def topk_pairs(players: PlayerMap, token_scores: Sequence[np.ndarray], k: int) -> np.ndarray:
  """Top-k players of each modality by score, crossed over modality pairs.

  Args:
    players: the example's player map.
    token_scores: per modality, float [T_m] attribution (only player positions are read).
    k: tokens kept per modality (fewer if a modality has fewer players).

  Returns:
    int32 [P, 2], P = Σ_{a<b} min(k, n_a)·min(k, n_b); within a modality, higher score first.
  """
  if k < 1:
    raise ProbeError(f"k must be >= 1, got {k}")
  top = []
  for m in range(len(players.modality_names)):
    ids = players.players_of(m)
    s = np.asarray(token_scores[m], np.float64)[players.position[ids]]
    top.append(ids[np.argsort(-s, kind="stable")[:k]])
  out = []
  for a in range(len(top)):
    for b in range(a + 1, len(top)):
      out.append(np.stack(np.meshgrid(top[a], top[b], indexing="ij"), -1).reshape(-1, 2))
  return np.concatenate(out).astype(np.int32)


def random_pairs(players: PlayerMap, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
  """`n_pairs` cross-modal pairs drawn uniformly without replacement (all if fewer exist)."""
  if n_pairs < 1:
    raise ProbeError(f"n_pairs must be >= 1, got {n_pairs}")
  allp = cross_modal_pairs(players)
  if len(allp) <= n_pairs:
    return allp
  return allp[np.sort(rng.choice(len(allp), n_pairs, replace=False))]


def pad_pairs(pairs: np.ndarray, n_max: int) -> tuple[np.ndarray, np.ndarray]:
  """Pads to a fixed count (repeating pair 0) so that examples share one compiled probe.

  Returns:
    (int32 [n_max, 2], bool [n_max] validity).
  """
  p = len(pairs)
  if p > n_max:
    raise ProbeError(f"{p} pairs exceed the padded count {n_max}")
  out = np.zeros((n_max, 2), np.int32)
  out[:p] = pairs
  out[p:] = pairs[0]
  valid = np.arange(n_max) < p
  return out, valid


@functools.partial(jax.jit, static_argnames=("fn",))
def token_attribution(fn: ModelValueFn, params: dict) -> list[Array]:
  """|gradient x (h - fill)| of the target logit per token: the attribution used by `topk`.

  Args:
    fn: a model game's value function (its graphdef, mode and task type are used).
    params: the model game's params (hs [*batch, T_m, H], masks, fills, target, state).

  Returns:
    Per modality, float [*batch, T_m].
  """

  def score(hs):
    logits = fn.logits(params["state"], hs, params["masks"])
    return targets.target_score(logits, params["target"], fn.task_type, score="logit").sum()

  grads = jax.grad(score)(list(params["hs"]))
  return [jnp.abs(((h - f) * g).sum(-1)) for h, f, g in zip(params["hs"], params["fills"], grads)]


@functools.partial(jax.jit, static_argnames=("fn", "n_orders", "chunk"))
def token_shapley(
  fn: ModelValueFn, params: dict, key: Array, *, n_orders: int, chunk: int
) -> list[Array]:
  """|Shapley value| of every token in the game of `fn`: the `shapley` map of `topk`.

  The map that matches what the probes score: the same expert, fill and target score. Every
  position of every modality is a player (a padded one is masked inside the model, so its value is
  0). Random orders, each with its reverse (antithetic), add the players one at a time; a player's
  value is its mean marginal contribution over the orders: n + 1 coalitions per order, shared by the
  examples of the batch.

  Args:
    fn: a model game's value function with one score scale and no per-reference outputs.
    params: the game's params without players (state, hs [B, T_m, H], masks, fills, target).
    key: PRNG key of the orders.
    n_orders: orders (even; half of them random, half their reverses).
    chunk: coalitions per value-function call (each applies to every example of the batch).

  Returns:
    Per modality, float [B, T_m].
  """
  lengths = fn.lengths
  n = sum(lengths)
  keys = jax.random.split(key, max(1, n_orders // 2))
  orders = jax.vmap(lambda k: jax.random.permutation(k, n))(keys)
  orders = jnp.concatenate([orders, orders[:, ::-1]])  # [O, n]
  joins = jnp.argsort(orders, axis=1)  # [O, n]: the step at which each player joins
  coalitions = joins[:, None, :] < jnp.arange(n + 1)[None, :, None]  # [O, n + 1, n]
  players = {
    "player_modality": jnp.concatenate([jnp.full(t, m, jnp.int32) for m, t in enumerate(lengths)]),
    "player_position": jnp.concatenate([jnp.arange(t, dtype=jnp.int32) for t in lengths]),
  }
  o = coalitions.shape[0]
  v = shapley.evaluate_chunked(
    fn, {**params, **players}, coalitions.reshape(o * (n + 1), n), chunk
  ).reshape(o, n + 1, -1)  # [O, n + 1, B]
  before = jnp.take_along_axis(v, joins[..., None], axis=1)  # [O, n, B]: v(players before i)
  after = jnp.take_along_axis(v, joins[..., None] + 1, axis=1)  # ... and with i
  phi = jnp.abs((after - before).mean(0)).T  # [B, n]
  return jnp.split(phi, np.cumsum(lengths)[:-1].tolist(), axis=1)


# --------------------------------------------------------------------------------------------------
# Pair-level masking.
# --------------------------------------------------------------------------------------------------


def first_masked_budget(pairs: np.ndarray, order: np.ndarray, n_players: int) -> np.ndarray:
  """For each player, the smallest budget b at which masking the top-b ranked pairs hides it.

  Args:
    pairs: int [P, 2].
    order: int [P_valid] pair indices, best first.
    n_players: n (padded player count).

  Returns:
    int [n_players]; b_p (1-based), or a large number for players in no ranked pair.
  """
  first = np.full(n_players, np.iinfo(np.int32).max, np.int64)
  ranked = pairs[order]  # [P_valid, 2]
  b = np.arange(1, len(order) + 1)
  np.minimum.at(first, ranked[:, 0], b)
  np.minimum.at(first, ranked[:, 1], b)
  return first


def masking_coalitions(
  players_modality: np.ndarray,
  n_valid: int,
  pairs: np.ndarray,
  order: np.ndarray,
  budgets: Sequence[int],
  repeats: int,
  rng: np.random.Generator,
  n_modalities: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Coalitions (True = kept) for ranked pair masking and two random controls at every budget.

  Both controls mask, per modality, as many tokens as the ranked coalition does (unique tokens, since
  pairs share members). The matched control draws them from the tokens of the candidate pairs, the
  pool the ranking chose from, so "ranked beats random" tests the ranking and not the candidate
  selection (with `topk` candidates, tokens an attribution map already picked); the second control
  draws from all tokens of the modality.

  Args:
    players_modality: int [n] modality of each (padded) player (-1 = padding player).
    n_valid: real players.
    pairs: int [P, 2] candidate pairs.
    order: int [P_valid] valid pair indices, best first.
    budgets: pair budgets b.
    repeats: random repeats of each control.
    rng: numpy generator for the random controls.
    n_modalities: M.

  Returns:
    (bool [n_b, 1 + 2 * repeats, n]: index 0 = ranked, 1..repeats = random tokens of the candidate
    pairs, repeats+1.. = random tokens of all players; int [n_b, M] masked unique tokens per
    modality).
  """
  n = players_modality.shape[0]
  first = first_masked_budget(pairs, order, n)
  b = np.minimum(np.asarray(budgets), len(order))  # a budget beyond the candidates masks them all
  ranked_masked = first[None, :] <= b[:, None]  # [n_b, n]
  counts = np.stack(
    [(ranked_masked & (players_modality == m)).sum(1) for m in range(n_modalities)], 1
  )  # [n_b, M]
  pool = np.zeros(n, bool)
  pool[pairs[order].ravel()] = True  # every token the ranked coalitions can contain
  controls = []
  for allowed in (pool, np.arange(n) < n_valid):
    rand_masked = np.zeros((len(b), repeats, n), bool)
    for m in range(n_modalities):  # a handful of modalities; budgets and repeats are vectorised
      ids = np.flatnonzero((players_modality == m) & allowed)
      rank = np.argsort(rng.random((len(b), repeats, ids.size)), -1).argsort(-1)
      rand_masked[:, :, ids] = rank < counts[:, m][:, None, None]
    controls.append(rand_masked)
  keep = ~np.concatenate([ranked_masked[:, None], *controls], 1)
  return keep, counts


@functools.partial(jax.jit, static_argnames=("fn",))
def masked_logits(fn: ModelValueFn, params: dict, coalitions: Array) -> Array:
  """Logits [C, num_classes] of the model (fn.mode) on one example with non-members filled."""
  return _masked_logits(coalitions, params, fn)


def _masked_logits(coalitions: Array, params: dict, fn: ModelValueFn) -> Array:
  keep = keep_masks(coalitions, params["player_modality"], params["player_position"], fn.lengths)
  hs = masking.apply_fill(params["hs"], keep, params["fills"])
  return fn.logits(params["state"], hs, params["masks"])


@functools.partial(jax.jit, static_argnames=("fn", "chunk"))
def masked_logits_batch(
  fn: ModelValueFn, shared: dict, batched: dict, coalitions: Array, *, chunk: int
) -> Array:
  """`masked_logits` of N examples in one jitted call.

  Example e has params `{**shared, **batched[e]}` and coalitions `coalitions[e]`; the result equals
  `masked_logits(fn, {**shared, **batched[e]}, coalitions[e])` (up to float reassociation).

  Args:
    fn: a model game's value function (static).
    shared: params common to every example (`state`, `fills`).
    batched: per-example params with a leading example axis [N, ...] (`hs`, `masks`,
      `player_modality`, `player_position`).
    coalitions: bool [N, C, n] kept players.
    chunk: most coalitions per model call across the batch (whole examples are vmapped together
      while N_group * C <= chunk; an example with C > chunk is chunked; `shapley.example_groups`).

  Returns:
    float [N, C, num_classes].
  """
  return shapley.evaluate_examples(
    functools.partial(_masked_logits, fn=fn), shared, batched, coalitions, chunk
  )
