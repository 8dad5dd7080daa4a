"""The model factory: a run config and a store's shapes -> the model (`model.kind`)."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from flmoe_jax.data import store as store_lib
from flmoe_jax.errors import ConfigError
from flmoe_jax.models.fl_i2moe import DenseTransformer, FLI2MoE, I2MoE

KINDS = ("fl_i2moe", "i2moe", "dense")


def build_model(
  config: ml_collections.ConfigDict, fs: store_lib.FeatureStore, *, seed: int
) -> nnx.Module:
  """Builds FL-I2MoE, the original I2MoE or the dense baseline for the store's modalities and task."""
  m = config.model
  common = dict(
    input_dims=[spec.dim for spec in fs.modalities],
    num_classes=fs.task.num_classes,
    hidden_dim=m.hidden_dim,
    num_heads=m.num_heads,
    num_layers=m.num_layers,
    mlp_ratio=m.mlp_ratio,
    dropout=m.dropout,
    ln_eps=m.ln_eps,
    torch_init=m.torch_init,
    attention=m.attention,
    position=m.position,
    max_positions=sum(spec.max_len for spec in fs.modalities),
    dtype=jnp.dtype(m.dtype),
    rngs=nnx.Rngs(params=seed),
  )
  if m.kind == "dense":
    return DenseTransformer(**common)
  if m.kind in ("fl_i2moe", "i2moe"):
    return (FLI2MoE if m.kind == "fl_i2moe" else I2MoE)(
      **common,
      rw_layers=m.rw_layers,
      rw_hidden=m.rw_hidden,
      temperature=m.temperature,
      identical_expert_init=m.identical_expert_init,
    )
  raise ConfigError(f"model.kind {m.kind!r} is not one of 'fl_i2moe', 'i2moe', 'dense'")
