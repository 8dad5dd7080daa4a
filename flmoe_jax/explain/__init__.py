"""Expert-wise explanations: attributions, top-K% masking faithfulness, concentration and specificity.

Public API (see docs/explain.md):

  attribute(model, batch, *, method, expert, target, kinds, ...) -> Attribution
      per-token importance maps per expert and/or for the mixture (attnxgrad | attn | ig)
  faithfulness(model, batch, maps, *, key, means, options=MaskingOptions(ks, fill, ...), ...)
      -> FaithfulnessResult: top-K% masking comprehensiveness / sufficiency vs a random control,
      AOPC and gaps
  map_statistics(attr, ks), compare_maps(a, b, ks)
      concentration (entropy, Gini, top-K% mass, modality share) and cross-map overlap
  run_explain(ExplainConfig(...), workdir) -> ExplainReport
      the `flmoe explain` pipeline (JSON + figures under W/explain/); ExplainConfig holds its options

The masking operator (`masking.fill_vectors`, `apply_fill`, `candidate_masks`) and the targets
(`targets.target_mask`, `target_score`) are shared with the interaction probes.
Names load on first use (PEP 562), so `flmoe_jax.explain.config` stays importable without jax.
"""

from flmoe_jax import lazy
from flmoe_jax.errors import ExplainError as ExplainError

_EXPORTS = {
  "METHODS": "attribution",
  "MIXTURE": "attribution",
  "Attribution": "attribution",
  "attention_relevance": "attribution",
  "attribute": "attribution",
  "minmax_normalise": "attribution",
  "rollout": "attribution",
  "token_importance": "attribution",
  "compare_maps": "concentration",
  "map_statistics": "concentration",
  "DEFAULT_KS": "config",
  "FaithfulnessResult": "topk_faithfulness",
  "MaskingOptions": "topk_faithfulness",
  "budget": "topk_faithfulness",
  "faithfulness": "topk_faithfulness",
  "topk_mask": "topk_faithfulness",
  "ExplainReport": "results",
  "MeanStd": "results",
  "ExplainConfig": "config",
  "run_explain": "pipeline",
}


__getattr__, __all__ = lazy.exports(__name__, _EXPORTS, eager=["ExplainError"])
