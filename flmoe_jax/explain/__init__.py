"""Expert-wise explanations: attributions, top-K% masking faithfulness, concentration and specificity.

Public API (see docs/explain.md):

  attribute(model, batch, *, method, expert, target, kinds, ...) -> Attribution
      per-token importance maps per expert and/or for the mixture (attnxgrad | attn | ig)
  faithfulness(model, batch, maps, *, key, ks, fill, means, repeats, ...) -> FaithfulnessResult
      top-K% masking comprehensiveness / sufficiency vs a random control, AOPC and gaps
  map_statistics(attr, ks), compare_maps(a, b, ks)
      concentration (entropy, Gini, top-K% mass, modality share) and cross-map overlap
  run_explain(workdir, split, ...) -> ExplainReport
      the `flmoe explain` pipeline (JSON + figures under W/explain/)

The masking operator (`masking.fill_vectors`, `apply_fill`, `candidate_masks`) and the targets
(`targets.target_mask`, `target_score`) are shared with the interaction probes.
"""

from flmoe_jax.explain.attribution import (
  METHODS,
  MIXTURE,
  Attribution,
  ExplainError,
  attention_relevance,
  attribute,
  minmax_normalise,
  rollout,
  token_importance,
)
from flmoe_jax.explain.concentration import compare_maps, map_statistics
from flmoe_jax.explain.faithfulness import (
  DEFAULT_KS,
  FaithfulnessResult,
  budget,
  faithfulness,
  topk_mask,
)
from flmoe_jax.explain.results import ExplainReport, MeanStd


def run_explain(*args, **kwargs):
  """`flmoe_jax.explain.pipeline.run_explain` (imported lazily: it loads the run machinery)."""
  from flmoe_jax.explain.pipeline import run_explain as _run

  return _run(*args, **kwargs)


__all__ = [
  "DEFAULT_KS",
  "METHODS",
  "MIXTURE",
  "Attribution",
  "ExplainError",
  "ExplainReport",
  "FaithfulnessResult",
  "MeanStd",
  "attention_relevance",
  "attribute",
  "budget",
  "compare_maps",
  "faithfulness",
  "map_statistics",
  "minmax_normalise",
  "rollout",
  "run_explain",
  "token_importance",
  "topk_mask",
]
