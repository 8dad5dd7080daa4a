"""Frozen-encoder feature extraction: raw text/images -> token/patch features in a feature store.

  encoders.py   TextEncoder / ImageEncoder (HF Flax models, offline loading, jitted `encode`)
  extract.py    extract_features: batched, sharded over local devices, prefetched, resumable;
                run_extraction, features_from_config, add_cli: by name, from a config, the CLI

See docs/features.md.

transformers loads lazily (inside the loaders), so importing this package is cheap.
"""

from flmoe_jax.features.encoders import (
  ImageEncoder,
  TextEncoder,
  UnreadableImageError,
  easyvqa_demo_encoders,
  load_encoder,
  minilm_path,
  save_random_image_encoder,
)
from flmoe_jax.features.extract import (
  add_cli,
  extract_features,
  features_from_config,
  partial_dir,
  run_extraction,
)

__all__ = [
  "ImageEncoder",
  "add_cli",
  "TextEncoder",
  "UnreadableImageError",
  "easyvqa_demo_encoders",
  "extract_features",
  "features_from_config",
  "load_encoder",
  "minilm_path",
  "partial_dir",
  "run_extraction",
  "save_random_image_encoder",
]
