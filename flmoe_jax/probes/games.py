"""Games: value functions over coalitions of players, and the model games of the probes.

The Shapley engine (`shapley.py`) knows a model only through one contract (STYLE 2.8):

  value_fn(coalitions: bool [C, n_players]) -> float [C, *out_shape]

pure and jittable; `out_shape` is `()` for a scalar game, `(K,)` for a game that returns several
named outputs at once (e.g. the logit and the probability of the target, so both scales come from
one model call), or `(B,)` / `(B, K)` for a batch of examples sharing one player set.

A `Game` bundles that function with its player count, an optional `PlayerMap` (which
(modality, position) each player is) and output names. Internally a game is `fn(coalitions,
params)` with `fn` hashable (static under `jax.jit`) and `params` a pytree of arrays (traced), so
that the probes of many examples of one model share a single compiled program: only `params`
changes between examples.

Model games make a player "absent" with the shared masking operator of `flmoe_jax.explain.masking`
(mean fill by default, zero or a user baseline optionally): the probes, pair masking and the
faithfulness curves agree on what "absent" means. Tokens that are not players (`<s>`, padding)
always keep their features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flmoe_jax.errors import ProbeError
from flmoe_jax.explain import masking, targets

Array = jax.Array
SCORES = targets.SCORES  # ("logit", "prob", "logodds", "logprob")


# --------------------------------------------------------------------------------------------------
# Players.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PlayerMap:
  """Which token each player is: player p = position `position[p]` of modality `modality[p]`.

  Player ids are contiguous 0..n_players-1, ordered by modality then position (text tokens first,
  then image patches for the two-modality datasets). Construct with `from_masks` (the usual way) or
  directly and call `validate`.

  Attributes:
    modality: int [n_players], modality index of each player.
    position: int [n_players], position inside its modality's sequence.
    modality_names: names of the M modalities, in model input order.
    lengths: padded sequence length T_m of each modality.
  """

  modality: np.ndarray
  position: np.ndarray
  modality_names: tuple[str, ...]
  lengths: tuple[int, ...]

  @property
  def n_players(self) -> int:
    return int(self.modality.shape[0])

  @classmethod
  def from_masks(cls, candidate: Sequence[np.ndarray], modality_names: Sequence[str]) -> PlayerMap:
    """Players = the candidate tokens of one example (`masking.candidate_masks`).

    Args:
      candidate: per modality, bool [T_m] (True = may be a player: valid and not `<s>`).
      modality_names: M names.

    Returns:
      The validated player map.
    """
    cand = [np.asarray(c, bool).reshape(-1) for c in candidate]
    mod = np.concatenate([np.full(int(c.sum()), m, np.int32) for m, c in enumerate(cand)])
    pos = np.concatenate([np.flatnonzero(c).astype(np.int32) for c in cand])
    pm = cls(mod, pos, tuple(modality_names), tuple(int(c.shape[0]) for c in cand))
    pm.validate(cand)
    return pm

  def validate(self, valid: Sequence[np.ndarray] | None = None) -> None:
    """Strict checks (captum #1922: a silently wrong grouping gives plausible garbage).

    Args:
      valid: optional per-modality bool [T_m]; a player on an invalid (padding) token is an error.

    Raises:
      ProbeError: a modality without players, a position out of range, a duplicate player, a
        player on padding, or ids not ordered contiguously by (modality, position).
    """
    mod, pos = np.asarray(self.modality), np.asarray(self.position)
    m_count = len(self.modality_names)
    if len(self.lengths) != m_count:
      raise ProbeError(f"{len(self.lengths)} lengths for {m_count} modalities")
    if mod.shape != pos.shape or mod.ndim != 1:
      raise ProbeError(f"modality {mod.shape} and position {pos.shape} must be equal 1-D shapes")
    if mod.size and (mod.min() < 0 or mod.max() >= m_count):
      raise ProbeError(f"player modality ids must lie in [0, {m_count}), got {sorted(set(mod))}")
    for m, name in enumerate(self.modality_names):
      sel = pos[mod == m]
      if sel.size == 0:
        raise ProbeError(
          f"modality {name!r} has no player (every modality must appear in the player map; "
          "e.g. a text with only the <s> token)"
        )
      if sel.min() < 0 or sel.max() >= self.lengths[m]:
        raise ProbeError(
          f"modality {name!r}: player position out of range [0, {self.lengths[m]}): "
          f"{sel[(sel < 0) | (sel >= self.lengths[m])][:5].tolist()}"
        )
      if np.unique(sel).size != sel.size:
        raise ProbeError(f"modality {name!r}: the same token is two players")
      if valid is not None and not np.asarray(valid[m], bool)[sel].all():
        bad = sel[~np.asarray(valid[m], bool)[sel]]
        raise ProbeError(
          f"modality {name!r}: positions {bad[:5].tolist()} are padding, not players"
        )
    order = np.lexsort((pos, mod))
    if not np.array_equal(order, np.arange(mod.size)):
      raise ProbeError("player ids must be contiguous and ordered by (modality, position)")

  def player(self, modality: int | str, position: int) -> int:
    """The player id of a token.

    Raises:
      ProbeError: if that token is not a player.
    """
    m = self.modality_names.index(modality) if isinstance(modality, str) else int(modality)
    hit = np.flatnonzero((self.modality == m) & (self.position == int(position)))
    if hit.size == 0:
      raise ProbeError(f"token {position} of modality {self.modality_names[m]!r} is not a player")
    return int(hit[0])

  def players_of(self, modality: int | str) -> np.ndarray:
    """Ids of the players of one modality, int [n_m]."""
    m = self.modality_names.index(modality) if isinstance(modality, str) else int(modality)
    return np.flatnonzero(self.modality == m)

  def padded(self, n_max: int) -> tuple[np.ndarray, np.ndarray]:
    """(modality, position) int32 [n_max] with padding players (modality -1) after the real ones.

    Padding players map to no token; the fixed length lets examples of different lengths share
    one compiled probe.
    """
    n = self.n_players
    if n > n_max:
      raise ProbeError(f"{n} players do not fit n_max={n_max}")
    mod = np.full(n_max, -1, np.int32)
    pos = np.zeros(n_max, np.int32)
    mod[:n], pos[:n] = self.modality, self.position
    return mod, pos

  def to_json(self) -> dict:
    return {
      "modality_names": list(self.modality_names),
      "lengths": list(self.lengths),
      "modality": self.modality.tolist(),
      "position": self.position.tolist(),
    }


def keep_masks(
  coalitions: Array, player_modality: Array, player_position: Array, lengths: Sequence[int]
) -> list[Array]:
  """Coalitions over players -> per-modality keep masks over tokens.

  Tokens that are not players are always kept; players with modality -1 (padding players) map to
  no token (their scatter index is out of range and dropped).

  Args:
    coalitions: bool [C, n] (True = player present).
    player_modality: int [n].
    player_position: int [n].
    lengths: T_m per modality (static).

  Returns:
    Per modality, bool [C, T_m].
  """
  out = []
  for m, t_m in enumerate(lengths):
    idx = jnp.where(player_modality == m, player_position, t_m)  # t_m = out of range -> dropped
    keep = jnp.ones((coalitions.shape[0], t_m), bool)
    out.append(keep.at[:, idx].set(coalitions, mode="drop"))
  return out


# --------------------------------------------------------------------------------------------------
# Games.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plain:
  """Adapts a plain `value_fn(coalitions)` to the internal `fn(coalitions, params)` form."""

  value_fn: Callable[[Array], Array]

  def __call__(self, coalitions: Array, params: Any) -> Array:
    del params
    return self.value_fn(coalitions)


@dataclasses.dataclass(frozen=True)
class Game:
  """A cooperative game over `n_players` players.

  Attributes:
    fn: `fn(coalitions bool [C, n_players], params) -> float [C, *out_shape]`; hashable (a
      module-level function or a frozen dataclass), static under jit.
    params: pytree of arrays passed to `fn` (traced).
    n_players: n.
    players: optional map player -> (modality, position).
    outputs: names of the trailing output axis (empty for a scalar or batch game).
    name: a label for results and messages.
  """

  fn: Callable[[Array, Any], Array]
  params: Any
  n_players: int
  players: PlayerMap | None = None
  outputs: tuple[str, ...] = ()
  name: str = "game"

  def __call__(self, coalitions: Array) -> Array:
    """value_fn(coalitions bool [C, n_players]) -> float [C, *out_shape]."""
    return self.fn(jnp.asarray(coalitions, bool), self.params)

  @property
  def value_fn(self) -> Callable[[Array], Array]:
    return self.__call__


def game_from_value_fn(
  value_fn: Callable[[Array], Array],
  n_players: int,
  *,
  players: PlayerMap | None = None,
  outputs: Sequence[str] = (),
  name: str = "game",
) -> Game:
  """Wraps a pure jittable `value_fn(bool [C, n_players]) -> float [C, *out_shape]`."""
  if players is not None and players.n_players != n_players:
    raise ProbeError(f"player map has {players.n_players} players, game has {n_players}")
  return Game(_Plain(value_fn), None, int(n_players), players, tuple(outputs), name)


@dataclasses.dataclass(frozen=True)
class _HostFn:
  """Calls a numpy value function from jitted code (`jax.pure_callback`, vectorised)."""

  fn: Callable[[np.ndarray], np.ndarray]
  out_shape: tuple[int, ...]

  def __call__(self, coalitions: Array, params: Any) -> Array:
    del params
    spec = jax.ShapeDtypeStruct((coalitions.shape[0], *self.out_shape), jnp.float32)

    def host(c):
      return np.asarray(self.fn(np.asarray(c, bool)), np.float32).reshape(spec.shape)

    return jax.pure_callback(host, spec, coalitions, vmap_method="broadcast_all")


def game_from_numpy(
  fn: Callable[[np.ndarray], np.ndarray],
  n_players: int,
  *,
  out_shape: Sequence[int] = (),
  outputs: Sequence[str] = (),
  name: str = "numpy_game",
) -> Game:
  """A game from a host (numpy) value function, e.g. `synthetic.oracle_value` or a shapiq game.

  The function runs on the host through `jax.pure_callback`, so the engine's jitted sampler still
  applies; it is as fast as the numpy function (no device speed-up).

  Args:
    fn: bool [C, n_players] -> float [C, *out_shape].
    n_players: n.
    out_shape: the trailing output shape.
    outputs: names of the trailing axis.
    name: a label.
  """
  return Game(
    _HostFn(fn, tuple(int(s) for s in out_shape)), None, int(n_players), None, tuple(outputs), name
  )


def _soum_fn(coalitions: Array, params: Any) -> Array:
  members, sizes, coef = params  # [T, n] float, [T], [T, *out]
  hit = (coalitions.astype(jnp.float32) @ members.T) >= sizes  # [C, T]: T ⊆ S
  return jnp.tensordot(hit.astype(jnp.float32), coef, axes=1)


def soum_game(moebius: dict[tuple[int, ...], float], n_players: int, *, name: str = "soum") -> Game:
  """A sum of unanimity games v(S) = Σ_T c_T·1[T ⊆ S] (closed forms: SII(i,j) = Σ_{T⊇ij} c_T/(|T|-1)).

  Args:
    moebius: {player tuple: coefficient c_T} (the empty tuple is a constant term).
    n_players: n.
    name: a label.

  Returns:
    A jittable scalar game.
  """
  terms = list(moebius.items()) or [((), 0.0)]
  members = np.zeros((len(terms), n_players), np.float32)
  for t, (players, _) in enumerate(terms):
    if any(not 0 <= p < n_players for p in players):
      raise ProbeError(f"SOUM term {players} has a player outside [0, {n_players})")
    members[t, list(players)] = 1.0
  sizes = members.sum(1) - 0.5  # `>= |T| - 0.5` is `== |T|` robust to float sums
  coef = np.asarray([c for _, c in terms], np.float32)
  return Game(
    _soum_fn,
    (jnp.asarray(members), jnp.asarray(sizes), jnp.asarray(coef)),
    int(n_players),
    None,
    (),
    name,
  )


def check_game(game: Game) -> tuple[np.ndarray, np.ndarray]:
  """Validates a game before a long run; returns (v(∅), v(N)).

  Checks the output shape abstractly first (no compute), then evaluates the empty and the grand
  coalition and rejects NaN/Inf.

  Raises:
    ProbeError: wrong output shape or dtype, or a non-finite value.
  """
  n = game.n_players
  if not isinstance(n, int) or n < 1:
    raise ProbeError(f"n_players must be a positive int, got {n!r}")
  probe = jnp.stack([jnp.zeros(n, bool), jnp.ones(n, bool)])
  try:
    shape = jax.eval_shape(game.fn, probe, game.params)
  except Exception as e:  # a value function that cannot even trace on [2, n] masks
    raise ProbeError(
      f"{game.name}: value function failed on coalitions bool [2, {n}]: {type(e).__name__}: {e}"
    ) from None
  if not hasattr(shape, "shape") or shape.shape[:1] != (2,):
    got = getattr(shape, "shape", type(shape).__name__)
    raise ProbeError(
      f"{game.name}: value function must map bool [C, {n}] to float [C, ...]; for C=2 it "
      f"returned {got}"
    )
  if not jnp.issubdtype(shape.dtype, jnp.floating):
    raise ProbeError(f"{game.name}: value function returned dtype {shape.dtype}, want float")
  if game.outputs and shape.shape[-1:] != (len(game.outputs),):
    raise ProbeError(
      f"{game.name}: {len(game.outputs)} output names but output shape {shape.shape[1:]}"
    )
  vals = np.asarray(jax.jit(game.fn)(probe, game.params), np.float64)
  if not np.isfinite(vals).all():
    raise ProbeError(
      f"{game.name}: value function returned NaN/Inf (v(empty)={vals[0]}, v(all)={vals[1]})"
    )
  return vals[0], vals[1]


def output_shape(game: Game) -> tuple[int, ...]:
  """The trailing output shape of a game (abstract evaluation, no compute)."""
  probe = jax.ShapeDtypeStruct((1, game.n_players), jnp.bool_)
  return tuple(jax.eval_shape(game.fn, probe, game.params).shape[1:])


# --------------------------------------------------------------------------------------------------
# Model games.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelValueFn:
  """Value of a model (one expert or the mixture) on filled inputs; the `fn` of model games.

  Params (a dict pytree): `state` (nnx state of the expert or model), `hs` (per modality projected
  features [*batch, T_m, H]), `masks` ([*batch, T_m]), `fills` (per modality [H], or [K, T_m, H]
  reference tokens: the marginal game, whose value is the mean over the K references;
  `masking.reference_fills`), `target` ([*batch, C] 0/1), `player_modality`/`player_position`
  (int [n]).

  Attributes:
    graph: the `nnx.GraphDef` of the expert or model (hashable: a static jit argument; two splits
      of same-architecture models are equal, so they share one compiled program).
    mode: `expert` (an `Expert`: logits from its call) or `mixture` (`forward_projected`).
    task_type: multilabel | multiclass | binary.
    scores: score scales in output order; one scale gives no trailing axis.
    lengths: T_m per modality.
    per_reference: marginal game only: besides the mean over the K references, return the value on
      each reference and the mean over the references but one, so that the standard error of an
      index can include the reference draw: a linear index (SII) from its per-reference values
      (`shapley.reference_se`), any index (RG, a max) by the jackknife over its leave-one-out
      values (`shapley.jackknife_se`). The output is then [C, *batch, S * (1 + 2K)]: per scale,
      the mean first, then the K references, then the K leave-one-out means.
  """

  graph: Any
  mode: str
  task_type: str
  scores: tuple[str, ...]
  lengths: tuple[int, ...]
  per_reference: bool = False

  def __call__(self, coalitions: Array, params: dict) -> Array:
    batch_dims = params["hs"][0].ndim - 2  # 0 for one example, 1 for a batch
    keep = keep_masks(
      coalitions, params["player_modality"], params["player_position"], self.lengths
    )
    # [C, T] -> [C, 1.., T]: every coalition applies to every example of the batch.
    keep = [k.reshape(k.shape[:1] + (1,) * batch_dims + k.shape[1:]) for k in keep]
    fills = params["fills"]
    marginal = fills[0].ndim == 3  # [K, T_m, H] references
    if marginal:
      # [C, 1, 1.., T] against [K, 1.., T, H]: every coalition on every reference and example.
      keep = [k[:, None] for k in keep]
      fills = [f.reshape(f.shape[:1] + (1,) * batch_dims + f.shape[1:]) for f in fills]
    hs = masking.apply_fill(params["hs"], keep, fills)  # [C, (K,) *batch, T_m, H]
    logits = self.logits(params["state"], hs, params["masks"])  # [C, (K,) *batch, C_cls]
    vals = [
      targets.target_score(logits, params["target"], self.task_type, score=s) for s in self.scores
    ]
    if marginal and self.per_reference:  # [C, K, *batch] -> [C, *batch, S * (1 + 2K)]
      k = vals[0].shape[1]
      cols = [
        jnp.concatenate(
          [
            v.mean(1)[..., None],
            jnp.moveaxis(v, 1, -1),
            jnp.moveaxis((v.sum(1, keepdims=True) - v) / max(k - 1, 1), 1, -1),
          ],
          -1,
        )
        for v in vals
      ]
      return jnp.concatenate(cols, -1)
    if marginal:  # v(S) = E_ref[score(x_S, ref_rest)]: the mean over the references
      vals = [v.mean(1) for v in vals]
    return vals[0] if len(vals) == 1 else jnp.stack(vals, -1)

  def logits(self, state: Any, hs: Sequence[Array], masks: Sequence[Array]) -> Array:
    """Class logits [..., C] of the expert or the mixture on projected features [..., T_m, H]."""
    module = nnx.merge(self.graph, state)
    masks = [jnp.broadcast_to(m.astype(bool), h.shape[:-1]) for h, m in zip(hs, masks)]
    if self.mode == "expert":
      return module(list(hs), masks)[0]
    return module.forward_projected(list(hs), masks).logits


def expert_index(model, expert: int | str) -> int | None:
  """Index of an expert by name (`syn`, `red`, `uni_0`, ...) or int; None for 'mixture'."""
  if expert == "mixture":
    return None
  names = tuple(model.expert_names)
  if isinstance(expert, str):
    if expert not in names:
      raise ProbeError(f"expert {expert!r} not in {names + ('mixture',)}")
    return names.index(expert)
  if not 0 <= int(expert) < len(names):
    raise ProbeError(f"expert index {expert} out of range [0, {len(names)})")
  return int(expert)


def split_expert(model, expert: int | str) -> tuple[Any, Any, str]:
  """(graphdef, state, mode) of one expert alone (its slice of the stacked parameters) or of
  the whole model for 'mixture'. Running one expert costs 1/E of running the stack."""
  idx = expert_index(model, expert)
  if idx is None:
    graphdef, state = nnx.split(model)
    return graphdef, state, "mixture"
  module = model.experts.expert(idx) if hasattr(model, "experts") else model.expert
  graphdef, state = nnx.split(module)
  return graphdef, state, "expert"


def _game_fills(model, means, fill) -> list[Array]:
  """`model_game`'s fill vectors per modality [H]: the projected train mean, zero, or the user's."""
  if not isinstance(fill, str):
    return list(fill)
  return masking.fill_vectors(model, means, fill, error=ProbeError)


def _game_players(masks, kinds, names, players: PlayerMap | None) -> PlayerMap:
  """`model_game`'s player map: the candidate tokens common to the batch, or `players` checked."""
  if players is None:
    cand = masking.candidate_masks(masks, kinds)
    return PlayerMap.from_masks([np.asarray(c).all(0) for c in cand], names)
  players.validate([np.asarray(m).all(0) for m in masks])
  return players


def model_game(
  model,
  xs: Sequence[Array],
  masks: Sequence[Array],
  *,
  kinds: Sequence[str],
  task_type: str,
  expert: int | str = "syn",
  score: str | Sequence[str] = "logit",
  means: Sequence[np.ndarray] | None = None,
  fill: str | Sequence[Array] = "mean",
  target: Array | None = None,
  modality_names: Sequence[str] | None = None,
  players: PlayerMap | None = None,
) -> Game:
  """The game of a trained model on one example (or a batch sharing one player set).

  v(S) = score of the target when only the players in S keep their features; every other player
  is replaced by the fill vector of its modality (docs/method.md 5.1).

  Args:
    model: FLI2MoE or DenseTransformer.
    xs: per modality raw features [B, T_m, D_m] (B = 1: one example; the value is then [C]).
    masks: per modality bool [B, T_m].
    kinds: per modality `tokens` | `patches` (`<s>` of tokens is never a player).
    task_type: multilabel | multiclass | binary.
    expert: expert name or index, or 'mixture' (the full model's output).
    score: `logit`, `prob`, `logodds` or `logprob` (`explain.targets.target_score`), or a sequence of them
      (trailing output axis, one per scale).
    means: the store's train means per modality (for `fill='mean'`).
    fill: `mean` or `zero`, or a user baseline: per modality a projected vector [H].
    target: [B, C] 0/1 target; default: the mixture's clean prediction (for the true label pass
      `explain.targets.target_mask(logits, task_type, source='true', labels=labels)`).
    modality_names: names for the player map (default modality_0, ...).
    players: the player map; default: the candidate tokens (`masking.candidate_masks`), common to
      every example of the batch.

  Returns:
    A game with value shape [C], [C, K] (K scales), [C, B] or [C, B, K].
  """
  scores = (score,) if isinstance(score, str) else tuple(score)
  for s in scores:
    if s not in SCORES:
      raise ProbeError(f"score {s!r} not in {SCORES}")
  xs = [jnp.asarray(x, jnp.float32) for x in xs]
  masks = [jnp.asarray(m, bool) for m in masks]
  if len(xs) != model.num_modalities or len(masks) != len(xs) or len(kinds) != len(xs):
    raise ProbeError(
      f"model has {model.num_modalities} modalities; got {len(xs)} inputs, "
      f"{len(masks)} masks, {len(kinds)} kinds"
    )
  hs = model.project(xs)
  fills = [jnp.asarray(f, jnp.float32) for f in _game_fills(model, means, fill)]
  if target is None:
    clean = model.forward_projected(hs, masks).logits
    target = targets.target_mask(clean, task_type)
  names = tuple(modality_names or [f"modality_{m}" for m in range(len(xs))])
  players = _game_players(masks, kinds, names, players)
  single = xs[0].shape[0] == 1
  squeeze = (lambda a: a[0]) if single else (lambda a: a)
  graphdef, state, mode = split_expert(model, expert)
  params = {
    "state": state,
    "hs": [squeeze(h) for h in hs],
    "masks": [squeeze(m) for m in masks],
    "fills": fills,
    "target": squeeze(jnp.asarray(target, jnp.float32)),
    "player_modality": jnp.asarray(players.modality),
    "player_position": jnp.asarray(players.position),
  }
  fn = ModelValueFn(graphdef, mode, task_type, scores, tuple(int(h.shape[-2]) for h in hs))
  outputs = scores if len(scores) > 1 else ()
  return Game(fn, params, players.n_players, players, outputs, f"model:{expert}")
