"""Fused attention inside the frozen encoders: the same weights, the same features, the fused path
taken (counted), and the stock code where only it can answer."""

import jax
import numpy as np
import pytest
from _tiny_encoders import TINY_TEXT, tiny_encoder, tiny_path

from flmoe_jax.errors import EncoderError
from flmoe_jax.features import fused_attention, load_encoder
from flmoe_jax.features.config import FeaturesConfig

TEXTS = ["A man is eating food.", "the quick brown fox jumps over the lazy dog", ""]
LAYERS = {"bert": 2, "vit": 1, "clip": 1}


@pytest.fixture
def fused_calls(monkeypatch):
  """The query shapes of every `jax.nn.dot_product_attention` call traced during the test."""
  calls = []
  real = jax.nn.dot_product_attention

  def counting(query, key, value, **kwargs):
    calls.append(tuple(query.shape))
    return real(query, key, value, **kwargs)

  monkeypatch.setattr(jax.nn, "dot_product_attention", counting)
  return calls


def _inputs(enc):
  if enc.kind == "text":
    return enc.tokenize(TEXTS, buckets=None)  # padded to 16: the padding mask matters
  rng = np.random.default_rng(0)
  return {"pixel_values": rng.normal(size=(3, 3, enc.image_size, enc.image_size)).astype("f4")}


@pytest.mark.parametrize("name", ["bert", "vit", "clip"])
def test_fused_encoder_equals_its_own_attention(name, fused_calls):
  own = tiny_encoder(name)
  kind = "text" if name == "bert" else "image"
  extra = {"max_len": 16} if kind == "text" else {}
  fused = load_encoder(kind, tiny_path(name), attention="xla", **extra)
  batch = _inputs(own)
  x0, m0 = map(np.asarray, own.encode(batch))
  assert not fused_calls  # the encoders' own code never calls it
  x1, m1 = map(np.asarray, fused.encode(batch))
  # One fused call per layer, with [B, T, heads, head_dim] queries.
  assert len(fused_calls) == LAYERS[name] and fused_calls[0][2] == 2
  np.testing.assert_array_equal(m1, m0)
  np.testing.assert_allclose(x1, x0, atol=1e-5, rtol=1e-5)
  assert np.abs(x0).max() > 0.1  # not a comparison of zeros
  # The same weights; the manifest says which attention computed the features.
  assert fused.info()["params_digest"] == own.info()["params_digest"]
  assert fused.info()["attention"] == "xla" and "attention" not in own.info()


def test_minilm_real_weights_fused_equal_their_own_attention():
  own = load_encoder("text", "minilm", max_len=32)
  fused = load_encoder("text", "minilm", max_len=32, attention="xla")
  batch = own.tokenize(["a movie about love and war in a small city", "short"], buckets=None)
  x0, m0 = map(np.asarray, own.encode(batch))
  x1, _ = map(np.asarray, fused.encode(batch))
  np.testing.assert_allclose(x1[m0], x0[m0], atol=2e-5, rtol=1e-5)


def test_roberta_and_a_masked_head(fused_calls):
  # RoBERTa's own attention class, with padding and a head mask that switches one head off.
  from transformers import FlaxRobertaModel, RobertaConfig

  model = FlaxRobertaModel(RobertaConfig(vocab_size=99, pad_token_id=1, **TINY_TEXT), seed=0)
  rng = np.random.default_rng(1)
  ids = rng.integers(3, 99, size=(2, 12)).astype("i4")
  mask = np.ones((2, 12), "i4")
  ids[1, 7:], mask[1, 7:] = 1, 0
  heads = np.ones((TINY_TEXT["num_hidden_layers"], TINY_TEXT["num_attention_heads"]), "f4")
  heads[0, 1] = 0.0
  for head_mask in (None, heads):
    ref = model(ids, attention_mask=mask, head_mask=head_mask).last_hidden_state
    with fused_attention.fused("xla"):
      out = model(ids, attention_mask=mask, head_mask=head_mask).last_hidden_state
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(out)[real], np.asarray(ref)[real], atol=1e-5, rtol=1e-5)
  assert len(fused_calls) == 2 * TINY_TEXT["num_hidden_layers"]
  # The head mask is applied: with the head off the states change.
  off = model(ids, attention_mask=mask, head_mask=heads).last_hidden_state
  on = model(ids, attention_mask=mask).last_hidden_state
  assert np.abs(np.asarray(off) - np.asarray(on)).max() > 1e-3


def test_calls_that_need_the_weights_run_the_stock_code(fused_calls):
  from transformers import FlaxBertModel

  model = FlaxBertModel.from_pretrained(tiny_path("bert"))
  ids = np.array([[101, 2023, 2003, 102]], "i4")
  with fused_attention.fused("xla"):
    out = model(ids, output_attentions=True)
  assert not fused_calls
  assert len(out.attentions) == 2 and out.attentions[0].shape == (1, 2, 4, 4)


def test_bad_attention_is_one_clear_error():
  with pytest.raises(EncoderError, match="encoder attention 'flash' must be one of einsum, xla"):
    load_encoder("text", tiny_path("bert"), max_len=16, attention="flash")
  with pytest.raises(EncoderError, match="supports the model types .* not 'distilbert'"):
    fused_attention.check("xla", "distilbert", "some/model")
  assert fused_attention.check("einsum", "distilbert", "some/model") == "einsum"
  with pytest.raises(EncoderError, match="--encoder-attention .flash. not in"):
    FeaturesConfig(dataset="easyvqa", encoder_attention="flash")
