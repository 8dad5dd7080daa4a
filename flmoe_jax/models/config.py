"""`ModelConfig`: the architecture of FL-I2MoE, the original I2MoE and the dense baseline.

One frozen, hashable dataclass holds every size and switch the model classes read (docs/method.md
1); the modules take it whole (`FLI2MoE(config, rngs=...)`), so an option is declared and documented
once here. Because it is hashable it can sit in a module as static data: the model's `GraphDef`
stays hashable and usable as a static `jax.jit` argument.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import ml_collections

from flmoe_jax import choices

POSITION_ENCODINGS = choices.POSITION_ENCODINGS


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Sizes and switches of the models in `flmoe_jax.models`.

  Attributes:
    input_dims: D_m of each modality's raw features (M entries; FL-I2MoE needs M >= 2).
    num_classes: C, the width of the logits.
    hidden_dim: model width H (every modality is projected to it).
    num_heads: attention heads per expert layer (divides H).
    num_layers: pre-LN encoder layers per expert.
    mlp_ratio: expert MLP inner width = mlp_ratio * H.
    dropout: rate of every dropout (experts and gate).
    ln_eps: LayerNorm epsilon.
    torch_init: PyTorch-style Linear init (else Flax defaults).
    attention: `einsum` (explicit softmax(QK^T)V, the only path that returns attention maps) or a
      fused `jax.nn.dot_product_attention` backend, `xla` or `cudnn`, used whenever no maps, no
      attention delta and no dropout are asked for (inference: probes, masking curves). It changes
      how attention is computed, never the weights.
    position: `sinusoidal` (a fixed table added to the projected features, the paper's) or
      `learned` (a trainable [max_positions, H] table drawn from N(0, 1), one row per position of
      the concatenated sequence). Learned rows are nearly orthogonal from the start, which lets
      the layers tell a feature at one position from the same feature elsewhere: with them a
      planted cross-modal XOR at 48 tokens x 49 patches is learnt from 5,000 examples, with the
      sinusoidal table it is not (docs/ground_truth.md section 5).
    max_positions: rows of the learned table (>= the concatenated length L = sum T_m); unused
      with sinusoidal positions.
    rw_layers: Linear layers in the reweighting gate (>= 1).
    rw_hidden: width of the gate's hidden layers.
    temperature: gate softmax temperature T.
    identical_expert_init: all experts start from the same weights (the reference deep-copies one
      initialised model, docs/method.md 1.4); otherwise each gets its own init key.
    dtype: computation dtype (a `jnp.dtype`; names such as "bfloat16" are accepted).
    param_dtype: parameter dtype.
  """

  input_dims: tuple[int, ...]
  num_classes: int
  hidden_dim: int = 256
  num_heads: int = 4
  num_layers: int = 2
  mlp_ratio: int = 2
  dropout: float = 0.5
  ln_eps: float = 1e-5
  torch_init: bool = True
  attention: str = "einsum"
  position: str = "sinusoidal"
  max_positions: int = 0
  rw_layers: int = 2
  rw_hidden: int = 256
  temperature: float = 2.0
  identical_expert_init: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    # Normalise to hashable canonical values: a list of dims or a dtype name is accepted.
    object.__setattr__(self, "input_dims", tuple(int(d) for d in self.input_dims))
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
    object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype))
    if not self.input_dims or min(self.input_dims) < 1:
      raise ValueError(f"input_dims must be one or more positive widths, got {self.input_dims}")
    if self.attention not in choices.ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f"attention {self.attention!r} not in {choices.ATTENTION_IMPLEMENTATIONS}")
    if self.position not in POSITION_ENCODINGS:
      raise ValueError(f"position {self.position!r} not in {POSITION_ENCODINGS}")
    if self.position == "learned" and self.max_positions < 1:
      raise ValueError("a learned position table needs max_positions >= 1")
    if self.rw_layers < 1:
      raise ValueError(f"rw_layers must be >= 1, got {self.rw_layers}")
    if self.hidden_dim % self.num_heads:
      raise ValueError(
        f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}"
      )

  @property
  def num_modalities(self) -> int:
    """M, the number of input modalities."""
    return len(self.input_dims)

  def replace(self, **changes) -> ModelConfig:
    """A copy with `changes` applied (validated again)."""
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_run_config(
    cls,
    model: ml_collections.ConfigDict,
    *,
    input_dims: tuple[int, ...],
    num_classes: int,
    max_positions: int,
  ) -> ModelConfig:
    """The architecture a run config's `model` section describes, for a store's shapes.

    Args:
      model: the `model` section of a run config (`flmoe_jax.config`).
      input_dims: the store's D_m per modality.
      num_classes: the task's C.
      max_positions: the concatenated padded length sum T_m (rows of a learned table).

    Returns:
      The config; `model.kind` is not part of it (the factory picks the class).
    """
    names = {f.name for f in dataclasses.fields(cls)} - {
      "input_dims",
      "num_classes",
      "max_positions",
    }
    given = {k: model[k] for k in names if k in model}
    return cls(input_dims=input_dims, num_classes=num_classes, max_positions=max_positions, **given)
