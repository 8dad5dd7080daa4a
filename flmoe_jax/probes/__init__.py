"""Monte Carlo interaction probes: Shapley interaction index, redundancy gap, pair-level masking.

Public API:
  Game, PlayerMap, game_from_value_fn, game_from_numpy, soum_game, model_game   games (games.py)
  exact_interactions, shapley_values, exact_values, moebius_transform          exact (shapley.py)
  pair_scores, sii, redundancy_gap, mc_pair_statistics(_batch)                  Monte Carlo
  InteractionValues, PairScores, read_probe                                     results
  cross_modal_pairs, topk_pairs, random_pairs                                   candidate pairs
  top_pair_test, per_example_separation                                         standout (standout.py)
  run_probe                                                                     `flmoe probe`
"""

from flmoe_jax.probes.games import (
  Game,
  PlayerMap,
  ProbeError,
  check_game,
  game_from_numpy,
  game_from_value_fn,
  model_game,
  soum_game,
)
from flmoe_jax.probes.pairs import cross_modal_pairs, random_pairs, topk_pairs
from flmoe_jax.probes.results import InteractionValues, PairScores, read_probe
from flmoe_jax.probes.shapley import (
  exact_interactions,
  exact_values,
  mc_pair_statistics,
  mc_pair_statistics_batch,
  moebius_transform,
  pair_scores,
  redundancy_gap,
  shapley_values,
  sii,
)
from flmoe_jax.probes.standout import per_example_separation, top_pair_test


def run_probe(*args, **kwargs):
  """See `flmoe_jax.probes.pipeline.run_probe` (imported lazily: it loads runs and checkpoints)."""
  from flmoe_jax.probes.pipeline import run_probe as _run

  return _run(*args, **kwargs)


__all__ = [
  "Game",
  "InteractionValues",
  "PairScores",
  "PlayerMap",
  "ProbeError",
  "check_game",
  "cross_modal_pairs",
  "exact_interactions",
  "exact_values",
  "game_from_numpy",
  "game_from_value_fn",
  "mc_pair_statistics",
  "mc_pair_statistics_batch",
  "model_game",
  "moebius_transform",
  "pair_scores",
  "per_example_separation",
  "random_pairs",
  "read_probe",
  "redundancy_gap",
  "run_probe",
  "shapley_values",
  "sii",
  "soum_game",
  "top_pair_test",
  "topk_pairs",
]
