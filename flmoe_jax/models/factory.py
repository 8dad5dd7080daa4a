"""The model factory: a run config and a store's shapes -> the model (`model.kind`)."""

from __future__ import annotations

import ml_collections
from flax import nnx

from flmoe_jax.data import store as store_lib
from flmoe_jax.errors import ConfigError
from flmoe_jax.models.config import ModelConfig
from flmoe_jax.models.fl_i2moe import DenseTransformer, FLI2MoE, I2MoE

MODEL_CLASSES = {"fl_i2moe": FLI2MoE, "i2moe": I2MoE, "dense": DenseTransformer}
KINDS = tuple(MODEL_CLASSES)


def build_model(
  config: ml_collections.ConfigDict, fs: store_lib.FeatureStore, *, seed: int
) -> nnx.Module:
  """Builds FL-I2MoE, the original I2MoE or the dense baseline for the store's modalities and task."""
  m = config.model
  if m.kind not in MODEL_CLASSES:
    raise ConfigError(f"model.kind {m.kind!r} is not one of {', '.join(KINDS)}")
  return MODEL_CLASSES[m.kind](model_config(config, fs), rngs=nnx.Rngs(params=seed))


def model_config(config: ml_collections.ConfigDict, fs: store_lib.FeatureStore) -> ModelConfig:
  """The `ModelConfig` of a run config's `model` section for the store's modalities and task."""
  return ModelConfig.from_run_config(
    config.model,
    input_dims=tuple(spec.dim for spec in fs.modalities),
    num_classes=fs.task.num_classes,
    max_positions=sum(spec.max_len for spec in fs.modalities),
  )
