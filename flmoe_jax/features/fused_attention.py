"""Fused self-attention inside the Hugging Face Flax encoders, their parameter trees unchanged.

The HF Flax attention modules of BERT, RoBERTa, ViT and CLIP compute softmax(q k^T / sqrt(d) + bias) v
as two einsums around a materialised [B, N, T, T] weight tensor. Under `fused(implementation)` (a
`flax.linen.intercept_methods` interceptor) each such module's call runs through
`jax.nn.dot_product_attention` instead (XLA's fused path, or cuDNN flash attention on a GPU),
reusing the module's own query / key / value (and output) projections: the same parameters, so
pretrained weights load unchanged, the same padding mask and head mask, and the same features up to
float rounding (tests/fused_attention_test.py). Calls that need the attention weights themselves
(returned attentions, attention dropout) or that are causal or cross-attention run the stock code.

  with fused("xla"):
    out = model(input_ids=ids, attention_mask=mask, params=params)  # inside jit: traced fused
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Iterator

import flax.linen as nn
import jax

from flmoe_jax import choices
from flmoe_jax.errors import EncoderError

# The HF model types whose attention modules are listed in _LAYOUTS.
FUSED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "vit", "clip", "clip_vision_model")


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Where an HF attention module keeps its projections, and what its call returns."""

  query: str
  key: str
  value: str
  out: str | None  # the output projection applied inside the module (CLIP), or None (applied by
  # the caller's "self output" block: BERT, RoBERTa, ViT)


_BERT_LIKE = _Layout("query", "key", "value", None)
_LAYOUTS = {
  "FlaxBertSelfAttention": _BERT_LIKE,
  "FlaxRobertaSelfAttention": _BERT_LIKE,
  "FlaxXLMRobertaSelfAttention": _BERT_LIKE,
  "FlaxViTSelfAttention": _BERT_LIKE,
  "FlaxCLIPAttention": _Layout("q_proj", "k_proj", "v_proj", "out_proj"),
}


def _check_known(implementation: str) -> None:
  """EncoderError if `implementation` is not one of the attention implementations."""
  if implementation not in choices.ATTENTION_IMPLEMENTATIONS:
    known = ", ".join(choices.ATTENTION_IMPLEMENTATIONS)
    raise EncoderError(f"encoder attention {implementation!r} must be one of {known}")


def check(implementation: str, model_type: str, name: str) -> str:
  """The implementation, or EncoderError if it is unknown or cannot be fused for this model."""
  _check_known(implementation)
  if implementation != "einsum" and model_type not in FUSED_MODEL_TYPES:
    raise EncoderError(
      f"{name}: fused encoder attention ({implementation}) supports the model types "
      f"{', '.join(FUSED_MODEL_TYPES)}, not {model_type!r}; use attention 'einsum'"
    )
  return implementation


def _call_args(module, args, kwargs) -> dict:
  bound = inspect.signature(type(module).__call__).bind(module, *args, **kwargs)
  bound.apply_defaults()
  return dict(bound.arguments)


def _needs_stock(module, a: dict) -> bool:
  """Calls the fused path cannot reproduce: they need the weights or another masking."""
  dropout = getattr(module.config, "attention_probs_dropout_prob", None)
  if dropout is None:
    dropout = getattr(module.config, "attention_dropout", 0.0)
  return bool(
    a.get("output_attentions")
    or a.get("key_value_states") is not None
    or a.get("init_cache")
    or getattr(module, "causal", False)
    or (not a.get("deterministic", True) and dropout > 0.0)
  )


def _fused_call(module, layout: _Layout, a: dict, implementation: str):
  """The module's attention through `jax.nn.dot_product_attention`.

  Args:
    module: the bound HF attention module.
    layout: its projections.
    a: its call's arguments by name (hidden_states [B, T, D]; attention_mask [B, T] or None).
    implementation: `xla` or `cudnn`.

  Returns:
    (attn_output [B, T, D],): what the stock call returns without attentions.
  """
  h = a["hidden_states"]
  cfg = module.config
  heads = cfg.num_attention_heads
  b, t = h.shape[:2]

  def split(name):  # [B, T, D] -> [B, T, N, D / N]
    return getattr(module, name)(h).reshape(b, t, heads, -1)

  q, k, v = split(layout.query), split(layout.key), split(layout.value)
  mask = a.get("attention_mask")
  if mask is not None:
    mask = (mask > 0)[:, None, None, :]  # [B, 1, 1, S]: every query sees the real keys
  out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)
  head_mask = a.get("layer_head_mask")
  if head_mask is not None:
    # BERT-like models always pass one (ones unless the caller masks heads): it scales each head's
    # weights, hence its output, (m w) v = m (w v).
    out = out * head_mask[:, None].astype(out.dtype)
  out = out.reshape(b, t, -1)
  if layout.out is not None:
    out = getattr(module, layout.out)(out)
  return (out,)


@contextlib.contextmanager
def fused(implementation: str) -> Iterator[None]:
  """Runs the HF Flax attention modules called inside the block through fused attention.

  Args:
    implementation: `einsum` (no change: the encoders' own code), `xla` or `cudnn` (a GPU with
      cuDNN; bf16 or fp16 compute).
  """
  _check_known(implementation)
  if implementation == "einsum":
    yield
    return

  def interceptor(next_fun, args, kwargs, context):
    layout = _LAYOUTS.get(type(context.module).__name__)
    if layout is None or context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    a = _call_args(context.module, args, kwargs)
    if _needs_stock(context.module, a):
      return next_fun(*args, **kwargs)
    return _fused_call(context.module, layout, a, implementation)

  with nn.intercept_methods(interceptor):
    yield
