"""Interaction experts: one pre-LN multimodal Transformer (docs/method.md 1.3) and a stack of E of them (1.4).

`ExpertStack` holds the E experts as a single module whose every parameter carries a leading
expert axis of size E; it runs them with `nnx.vmap` over that axis (no Python loop over experts).
Every `nnx.Param` under `ExpertStack.stacked` has `out_sharding` metadata
`("expert", None, ...)`, so `nnx.get_partition_spec` under logical-axis rules that map
"expert" to a mesh axis shards the experts across devices; the metadata is attached after
creation with eager sharding off (so building the model, or an optimizer over it, needs no mesh:
place the state with `jax.device_put`/a jitted init using those specs), and nothing else in the
model is annotated (replicated).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flmoe_jax.models import layers
from flmoe_jax.models.config import ModelConfig

Array = jax.Array

EXPERT_AXIS = "expert"


class Expert(nnx.Module):
  """One expert: concat modalities -> +positions -> zero pads -> N pre-LN layers -> pool -> head.

  Inputs are M projected modality sequences [..., T_m, H] with masks [..., T_m] (any leading
  batch dims `...`, written N below). The positional
  encoding covers the concatenated sequence, so modality m's positions start at the summed
  (padded) array lengths of the earlier modalities, exactly as in the reference.
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    """Creates the expert.

    Args:
      config: the architecture (M = `config.num_modalities`; `attention`, `position` and the sizes
        are read from it, see `ModelConfig`).
      rngs: parameter RNG streams.
    """
    self.config = config
    self.num_modalities = config.num_modalities
    self.attention = config.attention
    self.dropout_rate = config.dropout
    self.hidden_dim = config.hidden_dim
    self.num_heads = config.num_heads
    self.num_layers = config.num_layers
    self.dtype = config.dtype
    self.position_table = (
      nnx.Param(
        jax.random.normal(
          rngs.params(), (config.max_positions, config.hidden_dim), config.param_dtype
        )
      )
      if config.position == "learned"
      else None
    )
    self.layers = nnx.List(
      [
        layers.EncoderLayer(
          config.hidden_dim,
          config.num_heads,
          mlp_ratio=config.mlp_ratio,
          dropout=config.dropout,
          ln_eps=config.ln_eps,
          torch_init=config.torch_init,
          dtype=config.dtype,
          param_dtype=config.param_dtype,
          rngs=rngs,
        )
        for _ in range(config.num_layers)
      ]
    )
    self.head = layers.linear(
      config.num_modalities * config.hidden_dim,
      config.num_classes,
      torch_init=config.torch_init,
      dtype=config.dtype,
      param_dtype=config.param_dtype,
      rngs=rngs,
    )

  def __call__(
    self,
    hs: list[Array],
    masks: list[Array],
    *,
    dropout_key: Array | None = None,
    attn_delta: Array | None = None,
    return_attn: bool = False,
  ) -> tuple[Array, Array, Array | None]:
    """Runs the expert.

    Args:
      hs: M arrays [N..., T_m, H], projected features (any leading dims N...).
      masks: M arrays [N..., T_m], True = real token (same leading dims).
      dropout_key: PRNG key, or None for deterministic.
      attn_delta: optional [num_layers, N..., heads, L, L] added to each layer's post-softmax
        attention (L = sum T_m).
      return_attn: whether to return the attention probabilities.

    Returns:
      (logits [N..., C], latent [N..., M*H], attn [num_layers, N..., heads, L, L] or None).
    """
    if len(hs) != self.num_modalities or len(masks) != self.num_modalities:
      raise ValueError(f"expected {self.num_modalities} modalities, got {len(hs)}/{len(masks)}")
    lengths = [h.shape[-2] for h in hs]
    x = jnp.concatenate([h.astype(self.dtype) for h in hs], axis=-2)  # [N..., L, H]
    mask = jnp.concatenate([m.astype(bool) for m in masks], axis=-1)  # [N..., L]
    x = x + self._positions(x.shape[-2])
    x = x * mask[..., None].astype(x.dtype)  # padded positions enter the layers as zeros
    keys = layers.split_keys(dropout_key, self.num_layers)
    fused = (
      self.attention != "einsum"
      and not return_attn
      and attn_delta is None
      and (dropout_key is None or self.dropout_rate == 0)
    )
    kv_lengths = order = None
    if fused:
      # Attention is permutation-equivariant once the positions are added, so sort the real tokens
      # first (stable) and give the fused kernel their count: padding in the middle of the sequence
      # (text padding before the image patches) becomes the trailing padding flash kernels take.
      order = jnp.argsort(~mask, axis=-1, stable=True)  # [N..., L]
      x = jnp.take_along_axis(x, order[..., None], axis=-2)
      kv_lengths = jnp.sum(mask, axis=-1, dtype=jnp.int32)
    attns = []
    for i, layer in enumerate(self.layers):  # a static loop over depth, not over experts
      delta = None if attn_delta is None else attn_delta[i]
      x, probs = layer(
        x,
        mask,
        dropout_key=keys[i],
        attn_delta=delta,
        kv_lengths=kv_lengths,
        implementation=self.attention,
      )
      attns.append(probs)
    if fused:
      x = jnp.take_along_axis(x, jnp.argsort(order, axis=-1)[..., None], axis=-2)  # original order
    splits = np.cumsum(lengths)[:-1].tolist()
    pooled = [
      layers.masked_mean(xm, mm)
      for xm, mm in zip(jnp.split(x, splits, axis=-2), masks, strict=True)
    ]
    latent = jnp.concatenate(pooled, axis=-1)  # [N..., M*H]
    logits = self.head(latent)
    return logits, latent, (jnp.stack(attns) if return_attn else None)

  def _positions(self, length: int) -> Array:
    """[L, H] positional encoding of the concatenated sequence."""
    if self.position_table is None:
      return layers.sinusoidal_positions(length, self.hidden_dim, self.dtype)
    table = self.position_table[...]
    if length > table.shape[0]:
      raise ValueError(
        f"sequence of {length} positions, but the learned table has {table.shape[0]}"
      )
    return table[:length].astype(self.dtype)


class ExpertStack(nnx.Module):
  """E experts with identical architecture, stored as one module with a leading expert axis.

  Attributes:
    stacked: an `Expert` whose every parameter has shape [E, *per_expert_shape].
    num_experts: E.
  """

  def __init__(self, config: ModelConfig, num_experts: int, *, rngs: nnx.Rngs):
    """Creates E experts.

    Args:
      config: the architecture of each expert; `config.identical_expert_init` starts every expert
        from the same weights (the reference deep-copies one initialised model, docs/method.md
        1.4), otherwise each expert gets its own init key.
      num_experts: E.
      rngs: parameter RNG streams (one `params` key is drawn).
    """
    self.num_experts = num_experts
    # Hashable static data, so the model's GraphDef is hashable and serves as a static jit argument.
    self.config = config
    key = rngs.params()
    if config.identical_expert_init:
      keys = jnp.stack([key] * num_experts)  # same key per expert -> identical weights
    else:
      keys = jax.random.split(key, num_experts)

    @nnx.vmap(in_axes=0, out_axes=0, graph=False)
    def make(k):
      return Expert(config, rngs=nnx.Rngs(params=k))

    # No eager sharding for these variables: the `out_sharding` set below is a logical annotation
    # for `nnx.get_partition_spec`; with eager sharding on, every Variable copied from these
    # (e.g. `nnx.Optimizer` state) would demand a mesh context at creation time.
    with nnx.use_eager_sharding(False):
      self.stacked = make(keys)
    # Logical sharding names: leading axis "expert", the rest replicated.
    for _, var in nnx.iter_graph(self.stacked):
      if isinstance(var, nnx.Param):
        var.set_metadata(out_sharding=(EXPERT_AXIS,) + (None,) * (var.get_value().ndim - 1))

  def __call__(
    self,
    hs: list[Array],
    masks: list[Array],
    *,
    dropout_keys: Array | None = None,
    attn_delta: Array | None = None,
    return_attn: bool = False,
  ) -> tuple[Array, Array, Array | None]:
    """Runs all experts on the same inputs, vmapped over the expert axis.

    Args:
      hs: M arrays [N..., T_m, H] (any leading dims N...).
      masks: M arrays [N..., T_m].
      dropout_keys: [E] PRNG keys (one per expert), or None for deterministic.
      attn_delta: optional [E, num_layers, N..., heads, L, L].
      return_attn: whether to return attentions.

    Returns:
      (logits [E, N..., C], latents [E, N..., M*H], attn [E, num_layers, N..., heads, L, L] or
      None).
    """

    # Tree mode (graph=False): the experts are plain pytrees here, so this call also composes with
    # raw `jax.grad`/`jax.vmap` closures over the model (graph mode refuses outer-trace Variables).
    @nnx.vmap(
      in_axes=(0, None, None, 0, 0),
      out_axes=0,
      transform_metadata={nnx.PARTITION_NAME: EXPERT_AXIS},
      graph=False,
    )
    def run(expert, hs, masks, key, delta):
      return expert(hs, masks, dropout_key=key, attn_delta=delta, return_attn=return_attn)

    return run(self.stacked, list(hs), list(masks), dropout_keys, attn_delta)

  def expert(self, index: int) -> Expert:
    """A standalone copy of expert `index` (its slice of every stacked parameter).

    Args:
      index: expert index in [0, E).

    Returns:
      An `Expert` with per-expert parameter shapes (no expert axis).
    """
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Expert(self.config, rngs=nnx.Rngs(0))))
    pure = jax.tree.map(lambda a: a[index], nnx.to_pure_dict(nnx.state(self.stacked)))
    nnx.replace_by_pure_dict(abstract, pure)
    return nnx.merge(graphdef, abstract)
