"""FL-I2MoE model layer: layers, experts, the reweighting gate, the full model and its losses."""

from flmoe_jax.models.config import ModelConfig
from flmoe_jax.models.experts import EXPERT_AXIS, Expert, ExpertStack
from flmoe_jax.models.factory import build_model, model_config
from flmoe_jax.models.fl_i2moe import (
  DenseTransformer,
  ExpertOutput,
  FLI2MoE,
  I2MoE,
  MoEOutput,
  TrainOutput,
)
from flmoe_jax.models.layers import (
  MLP,
  Attention,
  EncoderLayer,
  dropout,
  kaiming_uniform,
  l2_normalize,
  linear,
  masked_mean,
  sinusoidal_positions,
  torch_bias_init,
)
from flmoe_jax.models.losses import (
  fl_i2moe_loss,
  interaction_loss,
  perturb_variants,
  task_loss,
  triplet_loss,
)
from flmoe_jax.models.reweighting import Reweighting

__all__ = [
  "EXPERT_AXIS",
  "MLP",
  "Attention",
  "DenseTransformer",
  "EncoderLayer",
  "Expert",
  "ExpertOutput",
  "ExpertStack",
  "FLI2MoE",
  "I2MoE",
  "ModelConfig",
  "MoEOutput",
  "Reweighting",
  "TrainOutput",
  "build_model",
  "dropout",
  "fl_i2moe_loss",
  "interaction_loss",
  "kaiming_uniform",
  "l2_normalize",
  "linear",
  "masked_mean",
  "model_config",
  "perturb_variants",
  "sinusoidal_positions",
  "task_loss",
  "torch_bias_init",
  "triplet_loss",
]
