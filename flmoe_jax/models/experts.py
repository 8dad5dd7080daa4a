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

from flmoe_jax import choices
from flmoe_jax.models import layers

Array = jax.Array

EXPERT_AXIS = "expert"
# `einsum`: explicit attention (maps available); `xla` / `cudnn`: `jax.nn.dot_product_attention`.
ATTENTION_IMPLEMENTATIONS = choices.ATTENTION_IMPLEMENTATIONS
# How position reaches the layers: the fixed sinusoidal table (the paper's) or a learned table.
POSITION_ENCODINGS = ("sinusoidal", "learned")


class Expert(nnx.Module):
  """One expert: concat modalities -> +positions -> zero pads -> N pre-LN layers -> pool -> head.

  Inputs are M projected modality sequences [..., T_m, H] with masks [..., T_m] (any leading
  batch dims `...`, written N below). The positional
  encoding covers the concatenated sequence, so modality m's positions start at the summed
  (padded) array lengths of the earlier modalities, exactly as in the reference.
  """

  def __init__(
    self,
    *,
    num_modalities: int,
    num_classes: int,
    hidden_dim: int = 256,
    num_heads: int = 4,
    num_layers: int = 2,
    mlp_ratio: int = 2,
    dropout: float = 0.5,
    ln_eps: float = 1e-5,
    torch_init: bool = True,
    attention: str = "einsum",
    position: str = "sinusoidal",
    max_positions: int = 0,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    """Creates the expert.

    Args:
      num_modalities: M.
      num_classes: C, width of the logits.
      hidden_dim: model width H.
      num_heads: attention heads.
      num_layers: number of encoder layers.
      mlp_ratio: MLP inner width = mlp_ratio * H.
      dropout: rate of every dropout.
      ln_eps: LayerNorm epsilon.
      torch_init: PyTorch-style Linear init.
      attention: `einsum` (explicit softmax(QK^T)V, the only path that returns attention maps) or
        a fused `jax.nn.dot_product_attention` backend, `xla` or `cudnn`, used whenever no maps,
        no attention delta and no dropout are asked for (inference: probes, masking curves).
      position: `sinusoidal` (a fixed table added to the projected features, the paper's) or
        `learned` (a trainable [max_positions, H] table drawn from N(0, 1), one row per position of
        the concatenated sequence). Learned rows are nearly orthogonal from the start, which lets
        the layers tell a feature at one position from the same feature elsewhere: with them a
        planted cross-modal XOR at 48 tokens x 49 patches is learnt from 5,000 examples, with the
        sinusoidal table it is not (docs/ground_truth.md section 5).
      max_positions: rows of the learned table (>= the concatenated length L); unused otherwise.
      dtype: computation dtype.
      param_dtype: parameter dtype.
      rngs: parameter RNG streams.
    """
    if attention not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f"attention {attention!r} not in {ATTENTION_IMPLEMENTATIONS}")
    if position not in POSITION_ENCODINGS:
      raise ValueError(f"position {position!r} not in {POSITION_ENCODINGS}")
    if position == "learned" and max_positions < 1:
      raise ValueError("a learned position table needs max_positions >= 1")
    self.position = position
    self.position_table = (
      nnx.Param(jax.random.normal(rngs.params(), (max_positions, hidden_dim), param_dtype))
      if position == "learned"
      else None
    )
    self.num_modalities = num_modalities
    self.attention = attention
    self.dropout_rate = dropout
    self.hidden_dim = hidden_dim
    self.num_heads = num_heads
    self.num_layers = num_layers
    self.dtype = dtype
    self.layers = nnx.List(
      [
        layers.EncoderLayer(
          hidden_dim,
          num_heads,
          mlp_ratio=mlp_ratio,
          dropout=dropout,
          ln_eps=ln_eps,
          torch_init=torch_init,
          dtype=dtype,
          param_dtype=param_dtype,
          rngs=rngs,
        )
        for _ in range(num_layers)
      ]
    )
    self.head = layers.linear(
      num_modalities * hidden_dim,
      num_classes,
      torch_init=torch_init,
      dtype=dtype,
      param_dtype=param_dtype,
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

  def __init__(
    self,
    num_experts: int,
    *,
    identical_init: bool = True,
    rngs: nnx.Rngs,
    **expert_kwargs,
  ):
    """Creates E experts.

    Args:
      num_experts: E.
      identical_init: start every expert from the same weights (the reference deep-copies one
        initialised model, docs/method.md 1.4); otherwise each expert gets its own init key.
      rngs: parameter RNG streams (one `params` key is drawn).
      **expert_kwargs: keyword arguments of `Expert` (everything but `rngs`).
    """
    self.num_experts = num_experts
    # A hashable static (sorted items, not a dict), so the model's GraphDef is hashable and serves
    # as a static jit argument as it is.
    self.expert_config = tuple(sorted(expert_kwargs.items()))
    key = rngs.params()
    if identical_init:
      keys = jnp.stack([key] * num_experts)  # same key per expert -> identical weights
    else:
      keys = jax.random.split(key, num_experts)

    @nnx.vmap(in_axes=0, out_axes=0, graph=False)
    def make(k):
      return Expert(**expert_kwargs, rngs=nnx.Rngs(params=k))

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
    graphdef, abstract = nnx.split(
      nnx.eval_shape(lambda: Expert(**dict(self.expert_config), rngs=nnx.Rngs(0)))
    )
    pure = jax.tree.map(lambda a: a[index], nnx.to_pure_dict(nnx.state(self.stacked)))
    nnx.replace_by_pure_dict(abstract, pure)
    return nnx.merge(graphdef, abstract)
