"""The Shapley-interaction engine: exact enumeration for small games, Monte Carlo pair scores for big ones.

Works for any `Game` (`games.py`): a pure jittable value function over coalition masks.

Exact (n ≤ ~14 players): all 2^n coalitions are evaluated in one jitted, chunked call; the Möbius
transform m = μ(v) (n butterfly passes) gives every index in closed form:
  SII(T) = Σ_{S ⊇ T} m(S) / (|S| - |T| + 1)   (T = {i}: the Shapley value; T = {i, j}: pairwise SII).

Monte Carlo (docs/method.md 5.2, 5.3), for a list of pairs (i, j):
  Δ_ij(S) = v(S∪ij) - v(S∪i) - v(S∪j) + v(S);   SII(i, j) = E_S[Δ_ij(S)]
  with S drawn as "size s ~ U{0..n-2}, then S uniform among the s-subsets of N∖{i,j}"; this is
  exactly the SII weight |S|!(n-|S|-2)!/(n-1)!, so the sample mean is unbiased.
  Redundancy gap on the same draws (deletion drops D_i = v(S∪ij) - v(S∪j), D_j = v(S∪ij) - v(S∪i),
  D_ij = v(S∪ij) - v(S)):  RG = E[D_ij - max(D_i, D_j)] (default),  RG-additive = E[D_ij - D_i - D_j]
  = -SII.
Sampler details:
  * Common random coalitions: one random permutation π and one size s per draw are shared by every
    pair; pair (i, j) takes the first s players of π with i and j removed, which is a uniform
    s-subset of N∖{i,j} for every pair, so pair differences have low variance.
  * Antithetic draws (default): each draw S is paired with its complement (N∖{i,j})∖S, whose size
    n-2-s is again uniform; the pair mean is the unit of the standard error.
  * All 4·P·R coalitions are built on device and evaluated in chunks of `max_coalitions_per_call`
    (one `lax.map` over chunks inside one jit: one compile per shape, bounded memory).
  * `mc_pair_statistics_batch` scores N examples (params, keys, pairs, player counts per example)
    in one jitted call: whole examples are vmapped together while their coalitions fit the knob.
Budgets count value-function evaluations (coalitions), as in shapiq; keys are explicit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flmoe_jax.probes.games import Game, ProbeError, check_game
from flmoe_jax.probes.results import InteractionValues, PairScores

Array = jax.Array
INDICES = ("SV", "SII", "Moebius")
PAIR_INDICES = ("SII", "RG", "RG-additive")
MAX_EXACT_PLAYERS = 14  # 2^14 = 16384 coalitions: exact is cheap, shapiq's ExactComputer range too
_HARD_EXACT_LIMIT = 20


# --------------------------------------------------------------------------------------------------
# Shared helpers.
# --------------------------------------------------------------------------------------------------


def evaluate_chunked(fn, params: Any, coalitions: Array, chunk: int) -> Array:
  """Evaluates `fn` on coalitions [C, n] in chunks of at most `chunk` (one lax.map, inside jit).

  Returns:
    float [C, *out_shape].
  """
  c, n = coalitions.shape
  if c <= chunk:
    return fn(coalitions, params)
  n_chunks = -(-c // chunk)
  pad = n_chunks * chunk - c
  padded = jnp.concatenate([coalitions, jnp.zeros((pad, n), bool)])
  out = jax.lax.map(lambda cs: fn(cs, params), padded.reshape(n_chunks, chunk, n))
  return out.reshape(n_chunks * chunk, *out.shape[2:])[:c]


def example_groups(chunk: int, per_example: int, n_examples: int) -> tuple[int, int]:
  """How a batch of examples shares the memory knob `chunk` (coalitions per value-function call).

  Whole examples are grouped while their coalitions fit (group x per_example <= chunk) and a group
  is evaluated in one vmapped call; an example with more than `chunk` coalitions runs alone,
  chunked by `chunk`. Either way no call sees more than `chunk` coalitions across the batch.

  Args:
    chunk: the memory knob (>= 1).
    per_example: coalitions one example needs.
    n_examples: examples in the batch.

  Returns:
    (examples per call, coalitions per example and call): the `batch_size` of the `jax.lax.map`
    over examples and the `chunk` of the per-example `evaluate_chunked`.
  """
  group = max(1, min(n_examples, chunk // max(per_example, 1)))
  return group, (chunk if group == 1 else per_example)


def evaluate_examples(fn, shared: Any, batched: Any, coalitions: Array, chunk: int) -> Array:
  """Evaluates N examples' coalitions, example e with params `{**shared, **batched[e]}` (inside jit).

  Whole examples share a call while their coalitions fit `chunk` (`example_groups`), so no call
  sees more than `chunk` coalitions across the batch.

  Args:
    fn: `fn(coalitions [C, n], params) -> [C, *out]`.
    shared: params common to every example (dict).
    batched: per-example params (dict), each leaf with a leading example axis [N, ...].
    coalitions: bool [N, C, n].
    chunk: the memory knob.

  Returns:
    float [N, C, *out].
  """
  n_examples, c = coalitions.shape[:2]
  group, per_call = example_groups(chunk, c, n_examples)

  def one(example):
    params, coal = example
    return evaluate_chunked(fn, {**shared, **params}, coal, per_call)

  return jax.lax.map(one, (batched, coalitions), batch_size=group)


def check_memory_knob(max_coalitions_per_call: int) -> int:
  """Validates `max_coalitions_per_call` (coalitions per value-function call); returns it as int.

  Raises:
    ProbeError: not an int >= 1 (a call must fit at least one coalition).
  """
  if not isinstance(max_coalitions_per_call, (int, np.integer)) or max_coalitions_per_call < 1:
    raise ProbeError(
      f"max_coalitions_per_call={max_coalitions_per_call!r} cannot fit one coalition; "
      "it must be an int >= 1"
    )
  return int(max_coalitions_per_call)


def _check_key(key: Any) -> Array:
  if key is None:
    raise ProbeError(
      "a PRNG key is required (jax.random.key(seed)); sampling draws nothing implicit"
    )
  try:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
      return key
    if key.shape == (2,) and key.dtype == jnp.uint32:  # legacy raw key
      return key
  except AttributeError:
    pass
  raise ProbeError(f"key must be a jax PRNG key (jax.random.key(seed)), got {type(key).__name__}")


def _key_record(key: Array) -> list[int]:
  data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  return np.asarray(data).ravel().tolist()


def check_pairs(pairs: Any, n_players: int) -> np.ndarray:
  """Validates a pair list; returns int32 [P, 2].

  Raises:
    ProbeError: wrong shape, non-integer ids, ids out of [0, n_players), or i == j.
  """
  a = np.asarray(pairs)
  if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] == 0:
    raise ProbeError(f"pairs must be a non-empty int array [P, 2], got shape {a.shape}")
  if not np.issubdtype(a.dtype, np.integer):
    if not (np.isfinite(a).all() and np.array_equal(a, np.round(a))):
      raise ProbeError("pair player ids must be integers")
  a = a.astype(np.int64)
  bad = (a < 0) | (a >= n_players)
  if bad.any():
    raise ProbeError(f"player ids out of range [0, {n_players}): {np.unique(a[bad])[:8].tolist()}")
  if (a[:, 0] == a[:, 1]).any():
    raise ProbeError(
      f"a pair needs two different players; got {a[a[:, 0] == a[:, 1]][:3].tolist()}"
    )
  return a.astype(np.int32)


def draws_for_budget(budget: int, n_pairs: int, *, antithetic: bool) -> int:
  """Draws R per pair that a budget of coalition evaluations buys (4 coalitions per draw and pair).

  Raises:
    ProbeError: if the budget cannot pay for a standard error (2 draws; 2 antithetic pairs).
  """
  if not isinstance(budget, (int, np.integer)) or budget < 1:
    raise ProbeError(f"budget must be a positive int (coalition evaluations), got {budget!r}")
  per_draw = 4 * n_pairs
  min_draws = 4 if antithetic else 2
  r = int(budget) // per_draw
  if antithetic:
    r -= r % 2
  if r < min_draws:
    raise ProbeError(
      f"budget {budget} is too small for {n_pairs} pairs: a draw costs 4 coalitions per pair and a "
      f"standard error needs >= {min_draws} draws{' (antithetic pairs)' if antithetic else ''}, "
      f"so the budget must be >= {per_draw * min_draws}"
    )
  return r


# --------------------------------------------------------------------------------------------------
# Exact enumeration.
# --------------------------------------------------------------------------------------------------


def all_coalitions(n_players: int) -> Array:
  """bool [2^n, n]; row k is the coalition whose bit p is player p."""
  k = jnp.arange(2**n_players, dtype=jnp.int32)
  return ((k[:, None] >> jnp.arange(n_players, dtype=jnp.int32)[None, :]) & 1).astype(bool)


@functools.partial(jax.jit, static_argnames=("fn", "n_players", "chunk"))
def _exact_values(fn, params, *, n_players: int, chunk: int) -> Array:
  return evaluate_chunked(fn, params, all_coalitions(n_players), chunk)


def exact_values(game: Game, *, max_coalitions_per_call: int = 4096) -> np.ndarray:
  """v(S) of all 2^n coalitions, float64 [2^n, *out_shape] (row k = coalition with bits of k).

  Raises:
    ProbeError: more than 20 players, a bad memory knob, or NaN/Inf values.
  """
  n = game.n_players
  if n > _HARD_EXACT_LIMIT:
    raise ProbeError(f"exact enumeration of {n} players needs 2^{n} coalitions; use Monte Carlo")
  chunk = check_memory_knob(max_coalitions_per_call)
  check_game(game)
  v = np.asarray(_exact_values(game.fn, game.params, n_players=n, chunk=chunk), np.float64)
  if not np.isfinite(v).all():
    raise ProbeError(f"{game.name}: value function returned NaN/Inf on some coalitions")
  return v


def moebius_transform(values: np.ndarray, n_players: int) -> np.ndarray:
  """Möbius transform m(T) = Σ_{S⊆T} (-1)^{|T|-|S|} v(S) by n butterfly passes.

  Args:
    values: [2^n, *out] in bit order (row k = coalition with the bits of k).
    n_players: n.

  Returns:
    [2^n, *out] Möbius coefficients in the same order.
  """
  v = np.asarray(values, np.float64)
  out = v.shape[1:]
  x = v.reshape((2,) * n_players + out)
  for p in range(n_players):
    axis = n_players - 1 - p  # C-order reshape: the last bit axis is bit 0
    x0 = np.take(x, 0, axis=axis)
    x1 = np.take(x, 1, axis=axis) - x0
    x = np.stack([x0, x1], axis=axis)
  return x.reshape(v.shape)


def _popcount(n_players: int) -> np.ndarray:
  k = np.arange(2**n_players)
  return ((k[:, None] >> np.arange(n_players)[None, :]) & 1).sum(1)


def _interaction_index(m: np.ndarray, n: int, subsets: Sequence[tuple[int, ...]], index: str):
  """Index values of the given coalitions from Möbius coefficients m [2^n, *out]."""
  size = _popcount(n)
  k_all = np.arange(2**n)
  out = []
  for t in subsets:  # few subsets (≤ C(14, 2) + 14 for SII order 2); each is one vector op
    tm = sum(1 << p for p in t)
    if index == "Moebius":
      out.append(m[tm])
      continue
    sup = (k_all & tm) == tm  # S ⊇ T
    w = 1.0 / (size[sup] - len(t) + 1)
    out.append(np.tensordot(w, m[sup], axes=1))
  return np.stack(out) if out else np.zeros((0, *m.shape[1:]))


def exact_interactions(
  game: Game,
  *,
  index: str = "SII",
  max_order: int = 2,
  min_order: int = 1,
  max_coalitions_per_call: int = 4096,
) -> InteractionValues:
  """Exact interaction indices of every coalition with min_order ≤ size ≤ max_order.

  Args:
    game: the game (n ≤ 20; intended for n ≤ ~14).
    index: `SII` (Grabisch-Roubens; order 1 = Shapley values), `SV` (max_order 1) or `Moebius`.
    max_order: largest coalition size.
    min_order: smallest coalition size (0 includes the empty coalition's index value).
    max_coalitions_per_call: memory knob.

  Returns:
    InteractionValues (exact=True, budget = 2^n, baseline_value = v(∅)).
  """
  if index not in INDICES:
    raise ProbeError(f"index {index!r} not in {INDICES}")
  if index == "SV" and max_order != 1:
    raise ProbeError("index='SV' is order 1; pass max_order=1 (or use index='SII')")
  n = game.n_players
  if not 0 <= min_order <= max_order <= n:
    raise ProbeError(f"need 0 <= min_order ({min_order}) <= max_order ({max_order}) <= n ({n})")
  v = exact_values(game, max_coalitions_per_call=max_coalitions_per_call)
  m = moebius_transform(v, n)
  subsets = [t for k in range(min_order, max_order + 1) for t in combinations(range(n), k)]
  vals = _interaction_index(m, n, subsets, "SII" if index == "SV" else index)
  return InteractionValues(
    index=index,
    max_order=max_order,
    min_order=min_order,
    n_players=n,
    interactions=tuple(subsets),
    values=vals,
    baseline_value=v[0],
    grand_value=v[-1],
    budget=2**n,
    outputs=game.outputs,
  )


def _exact_pair_stats(v: np.ndarray, n: int, pairs: np.ndarray) -> dict[str, np.ndarray]:
  """Exact SII / RG / RG-additive of pairs by weighted enumeration of S ⊆ N∖{i,j}."""
  size = _popcount(n)
  k = np.arange(2**n)
  logw = np.array(
    [
      math.lgamma(s + 1) + math.lgamma(n - s - 1) - math.lgamma(n) if s <= n - 2 else -np.inf
      for s in range(n + 1)
    ]
  )
  w_all = np.exp(logw)[size]  # SII weight of each coalition's size
  out = {name: [] for name in PAIR_INDICES}
  for i, j in pairs:  # ≤ C(14, 2) pairs, each a vector op over 2^n coalitions
    bi, bj = 1 << int(i), 1 << int(j)
    s = k[(k & (bi | bj)) == 0]
    w = w_all[s].reshape((-1,) + (1,) * (v.ndim - 1))
    v0, vi, vj, vij = v[s], v[s | bi], v[s | bj], v[s | bi | bj]
    d_i, d_j, d_ij = vij - vj, vij - vi, vij - v0
    out["SII"].append((w * (vij - vi - vj + v0)).sum(0))
    out["RG"].append((w * (d_ij - np.maximum(d_i, d_j))).sum(0))
    out["RG-additive"].append((w * (d_ij - d_i - d_j)).sum(0))
  return {name: np.stack(x) for name, x in out.items()}


# --------------------------------------------------------------------------------------------------
# Monte Carlo pair scores.
# --------------------------------------------------------------------------------------------------


def pair_coalitions(
  key: Array,
  pairs: Array,
  n_valid: Array | int,
  *,
  n_players: int,
  n_draws: int,
  antithetic: bool,
) -> Array:
  """The 4 coalitions (S, S∪i, S∪j, S∪ij) of every draw and pair.

  Args:
    key: PRNG key.
    pairs: int [P, 2] player ids (< n_valid).
    n_valid: number of real players (players ≥ n_valid are padding and never join a coalition).
    n_players: n (static; the coalition width).
    n_draws: R (even when antithetic).
    antithetic: draw R/2 coalitions and add their complements in N∖{i,j}.

  Returns:
    bool [R, P, 4, n].
  """
  n_base = n_draws // 2 if antithetic else n_draws
  k_perm, k_size = jax.random.split(key)
  player = jnp.arange(n_players)
  valid = player < n_valid
  # A uniform random permutation of the valid players as ranks; padding players rank last.
  u = jnp.where(valid, jax.random.uniform(k_perm, (n_base, n_players)), 2.0)
  rank = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1).astype(jnp.int32)  # [Rb, n]
  nv = jnp.asarray(n_valid, jnp.int32)
  size = jnp.floor(jax.random.uniform(k_size, (n_base,)) * (nv - 1)).astype(jnp.int32)
  size = jnp.minimum(size, nv - 2)  # s ~ U{0..n-2} (guard the u -> 1 float edge)
  i, j = pairs[:, 0], pairs[:, 1]
  ri, rj = rank[:, i][..., None], rank[:, j][..., None]  # [Rb, P, 1]
  r = rank[:, None, :]  # [Rb, 1, n]
  rest_rank = r - (ri < r) - (rj < r)  # rank of each player in π with i and j removed
  is_i = player[None, :] == i[:, None]  # [P, n]
  is_j = player[None, :] == j[:, None]
  rest = valid & ~is_i & ~is_j  # N∖{i,j}
  first = rest_rank < size[:, None, None]
  s = rest & first  # [Rb, P, n]
  if antithetic:
    s = jnp.stack([s, rest & ~first], axis=1).reshape(n_draws, *s.shape[1:])
  return jnp.stack([s, s | is_i, s | is_j, s | is_i | is_j], axis=2)


def _unit_stats(samples: Array, antithetic: bool) -> tuple[Array, Array]:
  """Mean and standard error over the draw axis 0 (antithetic pairs averaged first)."""
  if antithetic:
    samples = samples.reshape(samples.shape[0] // 2, 2, *samples.shape[1:]).mean(1)
  u = samples.shape[0]
  mean = samples.mean(0)
  se = samples.std(0, ddof=1) / jnp.sqrt(u)
  return mean, se


def full_input_coalitions(pairs: Array, n_valid: Array, n_players: int) -> Array:
  """The full input without i, without j, and without both, per pair: bool [P, 3, n_players].

  The "from the full input" redundancy gap keeps B = N minus {i, j} instead of drawing it: then
  D_i = v(N) - v(N - i), D_j = v(N) - v(N - j), D_ij = v(N) - v(N - ij), and
  RG_full = D_ij - max(D_i, D_j) = min(v(N - i), v(N - j)) - v(N - ij) (`full_input_rg`). It is
  exact, 3 evaluations per pair, and reads redundancy where the full input is: a pair whose members
  each make the other unnecessary in this very example.

  Args:
    pairs: int [P, 2] player pairs.
    n_valid: real player count (players >= n_valid are padding, never present).
    n_players: coalition width.
  """
  full = jnp.arange(n_players) < n_valid
  i = jax.nn.one_hot(pairs[:, 0], n_players, dtype=bool)
  j = jax.nn.one_hot(pairs[:, 1], n_players, dtype=bool)
  return jnp.stack([full & ~i, full & ~j, full & ~(i | j)], axis=1)


def full_input_rg(values: Array, axis: int) -> Array:
  """RG_full from the values of `full_input_coalitions`, whose 3 variants lie on `axis`.

  Args:
    values: [..., 3 (on `axis`), ...]: v(N - i), v(N - j), v(N - ij).
    axis: the axis of the three variants.

  Returns:
    min(v(N - i), v(N - j)) - v(N - ij), with `axis` removed.
  """
  v = [jnp.take(values, k, axis=axis) for k in range(3)]
  return jnp.minimum(v[0], v[1]) - v[2]


def reference_se(se_mean: np.ndarray, values_k: np.ndarray, se_k: np.ndarray) -> np.ndarray:
  """Standard error of a linear index of the marginal game, with the K references as random too.

  The marginal game's value is a mean over K references drawn once. For an index linear in the
  value (SII), its MC estimate is the grand mean of y[r, k] = Delta(S_r, reference k) over R draw
  units and the K references, crossed. The SE the MC engine reports for the mean game treats the
  references as fixed; with them random (y = mu + a_r + b_k + e_rk), the variance of the grand
  mean is (MS_draws + MS_references - MS_residual) / (R K), which the per-reference estimates give
  without the draws themselves:

    SE^2 = se_mean^2 + var_k(value_k) / K - (sum_k se_k^2 - K se_mean^2) / (K (K - 1)),

  floored at se_mean^2 (the references cannot make the estimate more precise).

  Args:
    se_mean: [...] MC standard error of the index on the mean game.
    values_k: [..., K] the index on each reference's game.
    se_k: [..., K] their MC standard errors (the same draws).

  Returns:
    [...] the standard error with the reference draw included (se_mean when K < 2).
  """
  se_mean = np.asarray(se_mean, np.float64)
  k = values_k.shape[-1]
  if k < 2:
    return se_mean
  between = np.var(np.asarray(values_k, np.float64), axis=-1, ddof=1) / k
  residual = ((np.asarray(se_k, np.float64) ** 2).sum(-1) - k * se_mean**2) / (k * (k - 1))
  return np.sqrt(np.maximum(se_mean**2 + between - residual, se_mean**2))


def jackknife_se(se_mean: np.ndarray, values_loo: np.ndarray) -> np.ndarray:
  """Standard error of any index of the marginal game (RG: not linear), with the references random.

  The jackknife over the K references: theta_(k) is the index estimated, from the same draws, on
  the game whose value is the mean over the references but reference k. Its spread estimates the
  variance the reference draw adds, (K - 1) / K * sum_k (theta_(k) - mean_k theta_(k))^2, and

    SE^2 = se_mean^2 + that,

  se_mean being the MC standard error with the references fixed. On a linear index the jackknife
  term is exactly `reference_se`'s between-reference term; this form leaves in the small MC part of
  it that `reference_se` subtracts (measured: 0.99-1.06 of the spread over redraws, tests).

  Args:
    se_mean: [...] MC standard error of the index on the mean game.
    values_loo: [..., K] the index on each leave-one-out game.

  Returns:
    [...] the standard error with the reference draw included (se_mean when K < 2).
  """
  se_mean = np.asarray(se_mean, np.float64)
  loo = np.asarray(values_loo, np.float64)
  k = loo.shape[-1]
  if k < 2:
    return se_mean
  jack = (k - 1) / k * ((loo - loo.mean(-1, keepdims=True)) ** 2).sum(-1)
  return np.sqrt(se_mean**2 + jack)


@functools.partial(jax.jit, static_argnames=("fn", "n_players", "n_draws", "antithetic", "chunk"))
def mc_pair_statistics(
  fn,
  params,
  key: Array,
  pairs: Array,
  n_valid: Array,
  *,
  n_players: int,
  n_draws: int,
  antithetic: bool,
  chunk: int,
) -> dict[str, tuple[Array, Array]]:
  """The jitted Monte Carlo kernel: {index: (mean [P, *out], stderr [P, *out])}.

  One compile per (fn, shapes, n_draws, antithetic, chunk); `params`, `key`, `pairs` and
  `n_valid` are traced, so every example of a model reuses it (examples with fewer players pad
  their player arrays to `n_players` and pass their real count as `n_valid`).

  Args:
    fn: the game's `fn(coalitions, params)` (static).
    params: the game's params pytree.
    key: PRNG key.
    pairs: int [P, 2] player ids < n_valid.
    n_valid: real player count.
    n_players: coalition width (static).
    n_draws: R draws per pair.
    antithetic: complement-paired draws.
    chunk: most coalitions per `fn` call.
  """
  coal = pair_coalitions(
    key, pairs, n_valid, n_players=n_players, n_draws=n_draws, antithetic=antithetic
  )  # [R, P, 4, n]
  r, p = coal.shape[:2]
  vals = evaluate_chunked(fn, params, coal.reshape(r * p * 4, n_players), chunk)
  vals = vals.reshape(r, p, 4, *vals.shape[1:]).astype(jnp.float32)
  v0, vi, vj, vij = vals[:, :, 0], vals[:, :, 1], vals[:, :, 2], vals[:, :, 3]
  d_i, d_j, d_ij = vij - vj, vij - vi, vij - v0  # deletion drops of i, of j, of both
  return {
    "SII": _unit_stats(vij - vi - vj + v0, antithetic),
    "RG": _unit_stats(d_ij - jnp.maximum(d_i, d_j), antithetic),
    "RG-additive": _unit_stats(d_ij - d_i - d_j, antithetic),
  }


@functools.partial(jax.jit, static_argnames=("fn", "n_players", "n_draws", "antithetic", "chunk"))
def mc_pair_statistics_batch(
  fn,
  shared: dict,
  batched: dict,
  keys: Array,
  pairs: Array,
  n_valid: Array,
  *,
  n_players: int,
  n_draws: int,
  antithetic: bool,
  chunk: int,
) -> dict[str, tuple[Array, Array]]:
  """`mc_pair_statistics` of N examples' games in one jitted call: {index: (mean, stderr) [N, P, *out]}.

  Example e's game has params `{**shared, **batched[e]}` (e.g. the model state and fills shared,
  the projected features, masks, target and player map per example); its numbers equal
  `mc_pair_statistics(fn, {**shared, **batched[e]}, keys[e], pairs[e], n_valid[e], ...)` (same
  key, same draws; equal up to float reassociation). One compile per (fn, shapes, statics).

  Memory knob: no value-function call sees more than `chunk` coalitions across the batch. An example
  needs C_e = 4 * n_draws * P coalitions; while C_e <= chunk, `chunk // C_e` whole examples are
  evaluated per call (vmapped), otherwise one example per call, chunked by `chunk` as in
  `mc_pair_statistics` (`example_groups`).

  Args:
    fn: the game's `fn(coalitions, params)` (static); params are dicts.
    shared: params leaves common to every example (not batched).
    batched: per-example params leaves, each with a leading example axis [N, ...].
    keys: PRNG keys [N].
    pairs: int [N, P, 2] player ids (< n_valid[e]; pad with `pairs_lib.pad_pairs`).
    n_valid: int [N] real player counts.
    n_players: coalition width (static).
    n_draws: R draws per pair.
    antithetic: complement-paired draws.
    chunk: most coalitions per `fn` call, across examples.
  """
  n_examples, n_pairs = pairs.shape[:2]
  group, per_call = example_groups(chunk, 4 * n_draws * n_pairs, n_examples)
  stats = functools.partial(
    mc_pair_statistics,
    fn,
    n_players=n_players,
    n_draws=n_draws,
    antithetic=antithetic,
    chunk=per_call,
  )

  def one(example):
    params, key, pr, nv = example
    return stats({**shared, **params}, key, pr, nv)

  return jax.lax.map(one, (batched, keys, pairs, n_valid), batch_size=group)


def pair_scores(
  game: Game,
  pairs: Any,
  *,
  budget: int,
  key: Array,
  antithetic: bool = True,
  max_coalitions_per_call: int = 4096,
  exact: bool | str = "auto",
  max_exact_players: int = MAX_EXACT_PLAYERS,
  indices: Sequence[str] = PAIR_INDICES,
) -> PairScores:
  """SII and redundancy gaps of the given pairs, exact when the budget covers 2^n coalitions.

  Args:
    game: the game.
    pairs: int [P, 2] player ids.
    budget: coalition evaluations allowed (MC: R = budget // (4P) draws per pair).
    key: PRNG key (mandatory even if the exact path ends up being used).
    antithetic: complement-paired draws (variance reduction; still unbiased).
    max_coalitions_per_call: most coalitions per value-function call (memory knob).
    exact: `auto` (exact if n ≤ max_exact_players and budget ≥ 2^n), True or False.
    max_exact_players: threshold of the `auto` rule.
    indices: which of `SII`, `RG`, `RG-additive` to report (all come from the same draws).

  Returns:
    PairScores with values and std_errors per index ([P, *out]).

  Raises:
    ProbeError: bad pairs, budget, key, memory knob, value shape, or NaN values; all raised before
      the long run except NaN on sampled coalitions.
  """
  for name in indices:
    if name not in PAIR_INDICES:
      raise ProbeError(f"pair index {name!r} not in {PAIR_INDICES}")
  key = _check_key(key)
  n = game.n_players
  if n < 2:
    raise ProbeError(f"a pair score needs >= 2 players, the game has {n}")
  pairs_np = check_pairs(pairs, n)
  chunk = check_memory_knob(max_coalitions_per_call)
  if exact not in ("auto", True, False):
    raise ProbeError(f"exact must be 'auto', True or False, got {exact!r}")
  use_exact = exact is True or (
    exact == "auto"
    and n <= max_exact_players
    and isinstance(budget, (int, np.integer))
    and budget >= 2**n
  )
  if use_exact:
    v = exact_values(game, max_coalitions_per_call=chunk)
    stats = _exact_pair_stats(v, n, pairs_np)
    return PairScores(
      pairs=pairs_np,
      values={k: stats[k] for k in indices},
      std_errors={k: np.zeros_like(stats[k]) for k in indices},
      baseline_value=v[0],
      grand_value=v[-1],
      n_players=n,
      budget=2**n,
      n_samples=0,
      estimator="exact",
      seed=None,
      exact=True,
      outputs=game.outputs,
    )
  r = draws_for_budget(budget, len(pairs_np), antithetic=antithetic)
  v_empty, v_full = check_game(game)
  stats = mc_pair_statistics(
    game.fn,
    game.params,
    key,
    jnp.asarray(pairs_np),
    jnp.int32(n),
    n_players=n,
    n_draws=r,
    antithetic=antithetic,
    chunk=chunk,
  )
  stats = {k: (np.asarray(m, np.float64), np.asarray(s, np.float64)) for k, (m, s) in stats.items()}
  if not all(np.isfinite(m).all() and np.isfinite(s).all() for m, s in stats.values()):
    raise ProbeError(f"{game.name}: value function returned NaN/Inf on sampled coalitions")
  return PairScores(
    pairs=pairs_np,
    values={k: stats[k][0] for k in indices},
    std_errors={k: stats[k][1] for k in indices},
    baseline_value=v_empty,
    grand_value=v_full,
    n_players=n,
    budget=r * 4 * len(pairs_np),
    n_samples=r,
    estimator="monte-carlo-antithetic" if antithetic else "monte-carlo",
    seed=_key_record(key),
    exact=False,
    outputs=game.outputs,
  )


def sii(game: Game, pairs: Any, *, budget: int, key: Array, **kwargs) -> PairScores:
  """Pairwise Shapley interaction index (docs/method.md 5.2) of the given pairs; see `pair_scores`."""
  return pair_scores(game, pairs, budget=budget, key=key, indices=("SII",), **kwargs)


def redundancy_gap(
  game: Game, pairs: Any, *, budget: int, key: Array, form: str = "max", **kwargs
) -> PairScores:
  """Redundancy gap (docs/method.md 5.3): `max` form E[D_ij - max(D_i, D_j)] (index `RG`, default) or the
  `additive` form E[D_ij - D_i - D_j] = -SII (index `RG-additive`); see `pair_scores`."""
  if form not in ("max", "additive"):
    raise ProbeError(f"redundancy-gap form {form!r} not in ('max', 'additive')")
  name = "RG" if form == "max" else "RG-additive"
  return pair_scores(game, pairs, budget=budget, key=key, indices=(name,), **kwargs)


def shapley_values(game: Game, *, max_coalitions_per_call: int = 4096) -> InteractionValues:
  """Exact Shapley values (order-1 SII) by enumeration."""
  return exact_interactions(
    game, index="SV", max_order=1, max_coalitions_per_call=max_coalitions_per_call
  )
