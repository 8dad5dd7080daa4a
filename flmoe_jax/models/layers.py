"""Building blocks of one FL-I2MoE expert (docs/method.md 1.3, 1.8).

Everything here is written for arbitrary leading batch dimensions `...`: a sequence tensor is
[..., L, H] and its key-padding mask is [..., L] (True = real token). Dropout is functional: every
call takes an explicit PRNG key, and `key=None` means deterministic (evaluation) behaviour, so the
modules hold no RNG state and can be vmapped over a stacked expert axis freely.

PyTorch parity notes:
  * `torch_init=True` reproduces `nn.Linear`'s default init: kaiming_uniform(a=sqrt(5)) on the
    kernel, which is uniform(+-1/sqrt(fan_in)), and uniform(+-1/sqrt(fan_in)) on the bias.
    `torch_init=False` uses the Flax defaults (lecun_normal kernel, zero bias).
  * LayerNorm eps defaults to 1e-5 (PyTorch), not Flax's 1e-6.
  * GELU is the exact erf form.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array

# Added to the attention logits of padded keys. A finite value (instead of PyTorch's -inf) keeps
# fully masked rows NaN-free; they are zeroed explicitly afterwards.
MASK_VALUE = float(np.finfo(np.float32).min)


# ------------------------------------------------------------------------------------------------
# Initialisers
# ------------------------------------------------------------------------------------------------


def kaiming_uniform(a: float = math.sqrt(5.0)) -> nnx.Initializer:
  """PyTorch `kaiming_uniform_(w, a)` for a Flax kernel of shape [..., fan_in, fan_out].

  Args:
    a: negative slope of the leaky-ReLU gain; sqrt(5) is what `nn.Linear` uses.

  Returns:
    An initializer `(key, shape, dtype) -> Array` drawing uniform(+-gain * sqrt(3 / fan_in)).
  """

  def init(key, shape, dtype=jnp.float32):
    fan_in = shape[-2]
    bound = math.sqrt(2.0 / (1.0 + a * a)) * math.sqrt(3.0 / fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_bias_init(fan_in: int) -> nnx.Initializer:
  """PyTorch `nn.Linear` bias init: uniform(+-1/sqrt(fan_in)).

  Flax bias initialisers only see the bias shape [out], so fan_in is bound here.

  Args:
    fan_in: input features of the layer.

  Returns:
    An initializer `(key, shape, dtype) -> Array`.
  """
  bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def linear(
  in_features: int,
  out_features: int,
  *,
  use_bias: bool = True,
  torch_init: bool = True,
  dtype=jnp.float32,
  param_dtype=jnp.float32,
  rngs: nnx.Rngs,
) -> nnx.Linear:
  """An `nnx.Linear` [..., in] -> [..., out] with PyTorch or Flax default initialisation.

  Args:
    in_features: input width.
    out_features: output width.
    use_bias: whether the layer has a bias.
    torch_init: PyTorch `nn.Linear` init if True, Flax defaults otherwise.
    dtype: computation dtype.
    param_dtype: parameter dtype.
    rngs: parameter RNG streams.

  Returns:
    The linear layer; its kernel is [in, out] (the transpose of a PyTorch weight).
  """
  kwargs = {}
  if torch_init:
    kwargs = dict(kernel_init=kaiming_uniform(), bias_init=torch_bias_init(in_features))
  return nnx.Linear(
    in_features,
    out_features,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=param_dtype,
    rngs=rngs,
    **kwargs,
  )


# ------------------------------------------------------------------------------------------------
# Stateless helpers
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _sinusoid_table(length: int, dim: int) -> np.ndarray:
  # Computed once per (length, dim) in float64 on the host: it is a trace-time constant.
  pos = np.arange(length, dtype=np.float64)[:, None]
  i = np.arange(dim)
  angle = pos / np.power(10000.0, (2 * (i // 2)) / dim)[None, :]
  return np.where(i % 2 == 0, np.sin(angle), np.cos(angle))


def sinusoidal_positions(length: int, dim: int, dtype=jnp.float32) -> Array:
  """Fixed sinusoidal positional encoding (docs/method.md 1.3.1).

  angle(p, i) = p / 10000^(2 floor(i/2) / dim); PE[p, 2k] = sin, PE[p, 2k+1] = cos.

  Args:
    length: number of positions L.
    dim: model width H.
    dtype: output dtype.

  Returns:
    [L, H] table.
  """
  return jnp.asarray(_sinusoid_table(int(length), int(dim)), dtype=dtype)


def masked_mean(x: Array, mask: Array) -> Array:
  """Mean over the token axis of the real tokens only: sum(m x) / max(1, sum(m)).

  Args:
    x: [..., T, H] features.
    mask: [..., T] boolean or {0,1} mask, True = real token.

  Returns:
    [..., H] pooled features (zeros for a fully padded row).
  """
  m = mask.astype(x.dtype)
  total = jnp.einsum("...th,...t->...h", x, m)
  count = jnp.maximum(jnp.sum(m, axis=-1, keepdims=True), 1.0)
  return total / count


def l2_normalize(x: Array, eps: float = 1e-12, axis: int = -1) -> Array:
  """`torch.nn.functional.normalize` semantics: x / max(||x||_2, eps).

  Args:
    x: [..., D] vectors.
    eps: lower bound on the norm.
    axis: the axis normalised.

  Returns:
    [..., D] unit vectors (zeros stay zeros).
  """
  # max(sqrt(s), eps) == sqrt(max(s, eps^2)), but the latter has a finite gradient at x = 0 (a modality
  # pooled to zero, e.g. fully mean-filled or an IG zero baseline), where sqrt'(0) would give NaN.
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def dropout(x: Array, rate: float, key: Array | None) -> Array:
  """Inverted dropout with an explicit key.

  Args:
    x: any-shaped array.
    rate: drop probability in [0, 1).
    key: PRNG key; None means deterministic (identity).

  Returns:
    x with each element zeroed with probability `rate` and survivors scaled by 1/(1-rate).
  """
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def split_keys(key: Array | None, n: int) -> Sequence[Array | None]:
  """n independent keys from `key` (a PRNG key), or n Nones in deterministic mode (key None)."""
  if key is None:
    return [None] * n
  return list(jax.random.split(key, n))


# ------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------


class Attention(nnx.Module):
  """Multi-head self-attention with a key-padding mask (docs/method.md 1.3.4).

  Layout (PyTorch parity): `q` has no bias; `kv` is one fused bias-free Linear H -> 2H whose output
  columns [0:H] are K and [H:2H] are V, and within each, head h owns columns h*hd:(h+1)*hd; `proj`
  is the output Linear H -> H with bias. Dropout (rate p) is applied to the attention
  probabilities and to the projected output.
  """

  def __init__(
    self,
    hidden_dim: int,
    num_heads: int,
    *,
    dropout: float = 0.5,
    torch_init: bool = True,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    """Creates the block.

    Args:
      hidden_dim: model width H (divisible by num_heads).
      num_heads: number of heads.
      dropout: dropout rate on attention probabilities and the output projection.
      torch_init: PyTorch-style Linear init.
      dtype: computation dtype.
      param_dtype: parameter dtype.
      rngs: parameter RNG streams.
    """
    if hidden_dim % num_heads:
      raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}")
    self.hidden_dim = hidden_dim
    self.num_heads = num_heads
    self.head_dim = hidden_dim // num_heads
    self.rate = dropout
    self.dtype = dtype
    kw = dict(torch_init=torch_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.q = linear(hidden_dim, hidden_dim, use_bias=False, **kw)
    self.kv = linear(hidden_dim, 2 * hidden_dim, use_bias=False, **kw)
    self.proj = linear(hidden_dim, hidden_dim, use_bias=True, **kw)

  def __call__(
    self,
    x: Array,
    mask: Array,
    *,
    dropout_key: Array | None = None,
    attn_delta: Array | None = None,
    kv_lengths: Array | None = None,
    implementation: str = "xla",
  ) -> tuple[Array, Array | None]:
    """Attends every token to every real token.

    Args:
      x: [..., L, H] (already layer-normed) tokens.
      mask: [..., L] key-padding mask, True = real token.
      dropout_key: PRNG key, or None for deterministic.
      attn_delta: optional [..., heads, L, L] added to the post-softmax probabilities before they
        are used (explanations differentiate w.r.t. it at zero).
      kv_lengths: optional int [...]: the real tokens are the first `kv_lengths` of the sequence
        (the caller sorted them there; `mask` is then unused). Selects the fused path,
        `jax.nn.dot_product_attention`, which never forms the [heads, L, L] probabilities: no
        dropout, no `attn_delta`, and `probs` is None.
      implementation: the fused path's backend, `xla` or `cudnn` (cuDNN flash attention: GPU,
        bf16/fp16 only).

    Returns:
      (out [..., L, H], probs [..., heads, L, L] or None on the fused path); `probs` are
      post-softmax, pre-delta, pre-dropout, and all-zero for a query whose keys are all padded.
    """
    *lead, length, _ = x.shape
    nh, hd = self.num_heads, self.head_dim
    q = self.q(x).reshape(*lead, length, nh, hd)
    kv = self.kv(x).reshape(*lead, length, 2, nh, hd)  # [K | V] column blocks, head-major inside
    k, v = kv[..., 0, :, :], kv[..., 1, :, :]
    if kv_lengths is not None:
      if attn_delta is not None:
        raise ValueError("the fused attention path has no attn_delta")
      flat = lambda t: t.reshape(-1, length, nh, hd)  # noqa: E731  (the kernel takes [B, L, N, hd])
      out = jax.nn.dot_product_attention(
        flat(q),
        flat(k),
        flat(v),
        key_value_seq_lengths=kv_lengths.reshape(-1).astype(jnp.int32),
        implementation=implementation,
      )
      return self.proj(out.reshape(*lead, length, nh * hd)), None
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k) * (hd**-0.5)
    # Softmax in (at least) float32 even for bf16 compute: the masked logits are huge negatives.
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    key_mask = mask[..., None, None, :].astype(bool)  # [..., 1, 1, L]
    logits = jnp.where(key_mask, logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1)
    # A row with no real key would otherwise be uniform over padding: make it exactly zero.
    probs = probs * jnp.any(key_mask, axis=-1, keepdims=True)
    probs = probs.astype(self.dtype)
    used = probs if attn_delta is None else probs + attn_delta.astype(probs.dtype)
    k_attn, k_proj = split_keys(dropout_key, 2)
    used = dropout(used, self.rate, k_attn)
    out = jnp.einsum("...hqk,...khd->...qhd", used, v).reshape(*lead, length, nh * hd)
    out = dropout(self.proj(out), self.rate, k_proj)
    return out, probs


class MLP(nnx.Module):
  """Token-wise MLP: Linear(H -> r*H) -> exact GELU -> dropout -> Linear(r*H -> H) (docs/method.md 1.3.5)."""

  def __init__(
    self,
    hidden_dim: int,
    mlp_dim: int,
    *,
    dropout: float = 0.5,
    torch_init: bool = True,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    """Creates the MLP.

    Args:
      hidden_dim: model width H.
      mlp_dim: inner width (mlp_ratio * H).
      dropout: rate of the inner dropout.
      torch_init: PyTorch-style Linear init.
      dtype: computation dtype.
      param_dtype: parameter dtype.
      rngs: parameter RNG streams.
    """
    self.rate = dropout
    kw = dict(torch_init=torch_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.fc1 = linear(hidden_dim, mlp_dim, **kw)
    self.fc2 = linear(mlp_dim, hidden_dim, **kw)

  def __call__(self, x: Array, *, dropout_key: Array | None = None) -> Array:
    """Applies the MLP token-wise.

    Args:
      x: [..., H].
      dropout_key: PRNG key, or None for deterministic.

    Returns:
      [..., H].
    """
    h = jax.nn.gelu(self.fc1(x), approximate=False)
    return self.fc2(dropout(h, self.rate, dropout_key))


class EncoderLayer(nnx.Module):
  """Pre-LN Transformer layer over the concatenated multimodal sequence (docs/method.md 1.3.3).

  x <- x + drop(Attn(LN1(x)))   (joint attention over all modalities' tokens)
  x <- x + drop(MLP(LN2(x)))    (LN2 and the MLP are shared by all modalities; being token-wise,
                                 applying them per modality equals applying them to the concat)
  """

  def __init__(
    self,
    hidden_dim: int,
    num_heads: int,
    *,
    mlp_ratio: int = 2,
    dropout: float = 0.5,
    ln_eps: float = 1e-5,
    torch_init: bool = True,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    """Creates the layer.

    Args:
      hidden_dim: model width H.
      num_heads: attention heads.
      mlp_ratio: MLP inner width = mlp_ratio * H.
      dropout: rate of every dropout in the layer.
      ln_eps: LayerNorm epsilon.
      torch_init: PyTorch-style Linear init.
      dtype: computation dtype.
      param_dtype: parameter dtype.
      rngs: parameter RNG streams.
    """
    self.rate = dropout
    kw = dict(torch_init=torch_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    ln = dict(epsilon=ln_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = nnx.LayerNorm(hidden_dim, **ln)
    self.attn = Attention(hidden_dim, num_heads, dropout=dropout, **kw)
    self.norm2 = nnx.LayerNorm(hidden_dim, **ln)
    self.mlp = MLP(hidden_dim, mlp_ratio * hidden_dim, dropout=dropout, **kw)

  def __call__(
    self,
    x: Array,
    mask: Array,
    *,
    dropout_key: Array | None = None,
    attn_delta: Array | None = None,
    kv_lengths: Array | None = None,
    implementation: str = "xla",
  ) -> tuple[Array, Array | None]:
    """Applies the layer.

    Args:
      x: [..., L, H] concatenated tokens of all modalities.
      mask: [..., L] key-padding mask, True = real token.
      dropout_key: PRNG key, or None for deterministic.
      attn_delta: optional [..., heads, L, L], see `Attention`.
      kv_lengths: optional int [...], the fused attention path (see `Attention`).
      implementation: the fused path's backend (see `Attention`).

    Returns:
      (x [..., L, H], attention probabilities [..., heads, L, L], None on the fused path).
    """
    k_attn, k_res1, k_mlp, k_res2 = split_keys(dropout_key, 4)
    a, probs = self.attn(
      self.norm1(x),
      mask,
      dropout_key=k_attn,
      attn_delta=attn_delta,
      kv_lengths=kv_lengths,
      implementation=implementation,
    )
    x = x + dropout(a, self.rate, k_res1)
    h = self.mlp(self.norm2(x), dropout_key=k_mlp)
    x = x + dropout(h, self.rate, k_res2)
    return x, probs
