"""Monte Carlo interaction probes: Shapley interaction index, redundancy gap, pair-level masking.

Public API:
  Game, PlayerMap, game_from_value_fn, game_from_numpy, soum_game, model_game   games (games.py)
  exact_interactions, shapley_values, exact_values, moebius_transform          exact (shapley.py)
  pair_scores, sii, redundancy_gap, mc_pair_statistics(_batch)                  Monte Carlo
  ProbeReport, InteractionValues, PairScores, read_probe                        results
  cross_modal_pairs, topk_pairs, random_pairs                                   candidate pairs
  top_pair_test, per_example_separation                                         standout (standout.py)
  planted_setup, planted_summary, type_auroc                                    planted pairs (planted.py)
  ProbeConfig, run_probe(cfg, workdir)                                          `flmoe probe`

Names load on first use (PEP 562), so `flmoe_jax.probes.config` stays importable without jax.
"""

from flmoe_jax import lazy
from flmoe_jax.errors import ProbeError as ProbeError

_EXPORTS = {
  "Game": "games",
  "PlayerMap": "games",
  "check_game": "games",
  "game_from_numpy": "games",
  "game_from_value_fn": "games",
  "model_game": "games",
  "soum_game": "games",
  "cross_modal_pairs": "pairs",
  "random_pairs": "pairs",
  "topk_pairs": "pairs",
  "InteractionValues": "results",
  "PairScores": "results",
  "planted_setup": "planted",
  "planted_summary": "planted",
  "type_auroc": "planted",
  "ProbeReport": "results",
  "read_probe": "results",
  "exact_interactions": "shapley",
  "exact_values": "shapley",
  "mc_pair_statistics": "shapley",
  "mc_pair_statistics_batch": "shapley",
  "moebius_transform": "shapley",
  "pair_scores": "shapley",
  "redundancy_gap": "shapley",
  "shapley_values": "shapley",
  "sii": "shapley",
  "per_example_separation": "standout",
  "top_pair_test": "standout",
  "ProbeConfig": "config",
  "run_probe": "pipeline",
}


__getattr__, __all__ = lazy.exports(__name__, _EXPORTS, eager=["ProbeError"])
