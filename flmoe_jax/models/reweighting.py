"""The reweighting ("gating") network of FL-I2MoE (docs/method.md 1.5).

u = concat_m normalize(masked_mean(X_m)) over the *projected* features (before PE and experts);
g = MLP(u) with `rw_layers` Linear layers (ReLU + dropout between them); w = softmax(g / T).
One weight vector per sample, not per token.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from flmoe_jax.models import layers
from flmoe_jax.models.config import ModelConfig

Array = jax.Array


class Reweighting(nnx.Module):
  """Per-sample expert weights from pooled, L2-normalised modality features.

  Layer i of `layers` corresponds to the reference's `reweight.mlp.network.{3 i}` (the indices in
  between are ReLU and Dropout).
  """

  def __init__(self, config: ModelConfig, num_experts: int, *, rngs: nnx.Rngs):
    """Creates the gate.

    Args:
      config: the architecture; the gate reads M, H (input width M * H), `rw_layers`, `rw_hidden`,
        `temperature`, `dropout` (after each hidden ReLU), `torch_init` and the dtypes.
      num_experts: E, the output width.
      rngs: parameter RNG streams.
    """
    self.temperature = float(config.temperature)
    self.rate = config.dropout
    self.dtype = config.dtype
    widths = (
      [config.num_modalities * config.hidden_dim]
      + [config.rw_hidden] * (config.rw_layers - 1)
      + [num_experts]
    )
    self.layers = nnx.List(
      [
        layers.linear(
          d_in,
          d_out,
          torch_init=config.torch_init,
          dtype=config.dtype,
          param_dtype=config.param_dtype,
          rngs=rngs,
        )
        for d_in, d_out in zip(widths[:-1], widths[1:], strict=True)
      ]
    )

  def __call__(
    self, hs: Sequence[Array], masks: Sequence[Array], *, dropout_key: Array | None = None
  ) -> Array:
    """Computes the expert weights.

    Args:
      hs: M arrays [..., T_m, H], projected features.
      masks: M arrays [..., T_m], True = real token.
      dropout_key: PRNG key, or None for deterministic.

    Returns:
      [..., E] weights; every row sums to 1.
    """
    u = jnp.concatenate(
      [
        layers.l2_normalize(layers.masked_mean(h.astype(self.dtype), m))
        for h, m in zip(hs, masks, strict=True)
      ],
      axis=-1,
    )
    keys = layers.split_keys(dropout_key, len(self.layers))
    for i, layer in enumerate(self.layers):
      u = layer(u)
      if i < len(self.layers) - 1:
        u = layers.dropout(jax.nn.relu(u), self.rate, keys[i])
    # Softmax in >= float32 so the weights sum to 1 to float32 precision even for bf16 compute.
    u = u.astype(jnp.promote_types(u.dtype, jnp.float32))
    return jax.nn.softmax(u / self.temperature, axis=-1)
