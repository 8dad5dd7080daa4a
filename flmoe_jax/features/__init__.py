"""Frozen-encoder feature extraction: raw text/images -> token/patch features in a feature store.

  encoders.py   TextEncoder / ImageEncoder (HF Flax models, offline loading, jitted `encode`)
  extract.py    extract_features: batched, sharded over local devices, prefetched, resumable;
                run_extraction(FeaturesConfig, out), features_from_config: by name, from a config
  config.py     FeaturesConfig (every option, declared once) and the `flmoe features` parser;
                ExtractionOptions (what extract_features takes from a library caller)

See docs/features.md.

transformers loads lazily (inside the loaders), and the package's names on first use (PEP 562), so
`flmoe_jax.features.config` (the options and the CLI parser) imports without jax.
"""

from flmoe_jax import lazy

_EXPORTS = {
  "ImageEncoder": "encoders",
  "TextEncoder": "encoders",
  "UnreadableImageError": "encoders",
  "easyvqa_demo_encoders": "encoders",
  "load_encoder": "encoders",
  "minilm_path": "encoders",
  "save_random_image_encoder": "encoders",
  "extract_features": "extract",
  "ExtractionTiming": "extract",
  "features_from_config": "extract",
  "partial_dir": "extract",
  "run_extraction": "extract",
  "FeaturesConfig": "config",
  "ExtractionOptions": "config",
  "add_cli": "extract",
}


__getattr__, __all__ = lazy.exports(__name__, _EXPORTS, eager=[])
