"""Attributions: closed-form rollouts, a hand-built model with a known answer, IG completeness.

Models are tiny (H = 8) and the option sets few, so the number of compiles stays small.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flmoe_jax.explain import (
  Attribution,
  ExplainError,
  attention_relevance,
  attribute,
  minmax_normalise,
  rollout,
  targets,
  token_importance,
)
from flmoe_jax.models import DenseTransformer, FLI2MoE, ModelConfig

KINDS = ("tokens", "patches")
H = 8
LENS = (6, 4)  # text (with <s> at 0 and padding), image patches


# --------------------------------------------------------------------------------------------------
# Pure functions.
# --------------------------------------------------------------------------------------------------


def test_rollout_rows_sum_to_one_and_order():
  rng = np.random.default_rng(0)
  rel = jnp.asarray(rng.random((3, 2, 5, 5)), jnp.float32)  # [layers, B, L, L]
  r = rollout(rel)
  np.testing.assert_allclose(np.asarray(r.sum(-1)), 1.0, rtol=1e-5)
  # The later layer multiplies on the left: R = A3 A2 A1 (row-normalised with +I).
  a = [np.asarray(x) + np.eye(5) for x in rel]
  a = [x / x.sum(-1, keepdims=True) for x in a]
  np.testing.assert_allclose(np.asarray(r), a[2] @ a[1] @ a[0], rtol=1e-5, atol=1e-6)


def test_rollout_of_attention_to_one_token():
  # Every query attends only to token 3: token 3 gets the maximum, every other token the same
  # (self-loop) mass, so the normalised map is exactly one-hot on 3.
  L = 7
  attn = np.zeros((2, 1, 1, L, L), np.float32)  # [layers, B, heads, L, L]
  attn[..., :, 3] = 1.0
  s = token_importance(rollout(attention_relevance(jnp.asarray(attn))), jnp.ones((1, L), bool))
  np.testing.assert_allclose(float(s.sum()), 1.0, rtol=1e-6)
  norm = np.asarray(minmax_normalise(s, jnp.ones((1, L), bool)))[0]
  assert norm[3] == pytest.approx(1.0, abs=1e-5)
  np.testing.assert_allclose(np.delete(norm, 3), 0.0, atol=1e-5)


def test_token_importance_ignores_padded_queries_and_normalise_excludes_non_candidates():
  r = jnp.asarray(np.random.default_rng(1).random((1, 4, 4)), jnp.float32)
  s = token_importance(r, jnp.asarray([[True, True, False, False]]))
  np.testing.assert_allclose(np.asarray(s)[0], np.asarray(r)[0, :2].mean(0), rtol=1e-6)
  cand = jnp.asarray([[False, True, True, False]])
  n = np.asarray(minmax_normalise(jnp.asarray([[9.0, 2.0, 4.0, -5.0]]), cand))[0]
  np.testing.assert_allclose(n, [0.0, 0.0, 1.0, 0.0], atol=1e-6)


# --------------------------------------------------------------------------------------------------
# A hand-built model: every query attends to text token 3, the head reads what token 3 sends.
# --------------------------------------------------------------------------------------------------


def _set(layer_root, path, value):
  obj = layer_root
  for p in path[:-1]:
    obj = obj[int(p)] if p.isdigit() else getattr(obj, p)
  var = getattr(obj, path[-1])
  var[...] = jnp.broadcast_to(jnp.asarray(value, jnp.float32), var.get_value().shape)


def _token3_model(kind):
  """1 layer, 1 head; LN1 bias puts 100 on dim 0 (queries read it), keys/values read dim 1, which
  only the (huge) text token 3 has large; the output projection writes dim 5; the head reads dim 5
  of both pooled modalities into class 0 (with a +10 bias, so class 0 is always predicted)."""
  kw = dict(input_dims=(H, H), num_classes=2, hidden_dim=H, num_heads=1, num_layers=1, dropout=0.0)
  if kind == "dense":
    model = DenseTransformer(ModelConfig(**kw), rngs=nnx.Rngs(0))
    root = model.expert
  else:
    model = FLI2MoE(ModelConfig(**kw, rw_hidden=8), rngs=nnx.Rngs(0))
    root = model.experts.stacked
  state = nnx.state(root, nnx.Param)
  nnx.update(root, jax.tree.map(jnp.zeros_like, state))
  _set(root, "layers.0.norm1.scale".split("."), np.ones(H))
  _set(root, "layers.0.norm1.bias".split("."), 100.0 * np.eye(H)[0])
  wq = np.zeros((H, H))
  wq[0, 0] = 1.0
  wkv = np.zeros((H, 2 * H))
  wkv[1, 0] = 1.0  # key dim 0 <- LN dim 1
  wkv[1, H + 5] = 1.0  # value dim 5 <- LN dim 1
  wp = np.zeros((H, H))
  wp[5, 5] = 1.0
  head = np.zeros((2 * H, 2))
  head[5, 0] = head[H + 5, 0] = 1.0
  _set(root, "layers.0.attn.q.kernel".split("."), wq)
  _set(root, "layers.0.attn.kv.kernel".split("."), wkv)
  _set(root, "layers.0.attn.proj.kernel".split("."), wp)
  _set(root, "head.kernel".split("."), head)
  _set(root, "head.bias".split("."), [10.0, 0.0])
  return model


def _token3_inputs(b=2):
  text = np.zeros((b, LENS[0], H), np.float32)
  text[:, 3, 1], text[:, 3, 2] = 50.0, -50.0
  masks = [np.arange(LENS[0])[None] < np.array([[6], [5]])[:b], np.ones((b, LENS[1]), bool)]
  return [jnp.asarray(text), jnp.zeros((b, LENS[1], H))], [jnp.asarray(m) for m in masks]


@pytest.mark.parametrize("kind", ["fl", "dense"])
@pytest.mark.parametrize("method", ["attnxgrad", "attn", "ig"])
def test_head_reading_token3_puts_all_mass_on_token3(kind, method):
  model = _token3_model(kind)
  hs, masks = _token3_inputs()
  attr = attribute(model, (hs, masks), method=method, kinds=KINDS, task_type="multiclass")
  assert isinstance(attr, Attribution)
  assert attr.views[-1] == "mixture" and len(attr.views) == model.num_experts + 1
  np.testing.assert_array_equal(np.asarray(attr.target)[:, 0], 1.0)
  text, image = (np.asarray(m) for m in attr.maps)
  np.testing.assert_allclose(text[:, :, 3], 1.0, atol=1e-4)
  np.testing.assert_allclose(np.delete(text, 3, axis=-1), 0.0, atol=1e-3)
  np.testing.assert_allclose(image, 0.0, atol=1e-3)  # a flat image map normalises to 0
  # Raw mass: token 3 dominates the text tokens (rollout keeps each token's self-loop).
  raw = np.asarray(attr.raw[0])
  assert np.all(raw[:, :, 3] > 1.5 * np.delete(raw, 3, axis=-1).max(-1))


def test_candidates_exclude_special_token_and_padding():
  model = _token3_model("fl")
  hs, masks = _token3_inputs()
  attr = attribute(model, (hs, masks), method="attn", kinds=KINDS, task_type="multiclass")
  cand = np.asarray(attr.candidates[0])
  np.testing.assert_array_equal(cand[1], [False, True, True, True, True, False])
  text = np.asarray(attr.maps[0])
  assert np.all(text[:, :, 0] == 0) and np.all(text[1, :, 5] == 0)
  with pytest.raises(ExplainError, match="kinds"):
    attribute(model, (hs, masks), method="attn", task_type="multiclass")
  with pytest.raises(ExplainError, match="kinds"):
    attribute(model, (hs, masks), method="attn", kinds=("tokens",), task_type="multiclass")


# --------------------------------------------------------------------------------------------------
# A random model: mixture gradient, IG completeness and chunking, argument validation.
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_model():
  return FLI2MoE(
    ModelConfig(
      input_dims=(5, 4),
      num_classes=3,
      hidden_dim=H,
      num_heads=2,
      num_layers=2,
      rw_hidden=8,
      identical_expert_init=False,
    ),
    rngs=nnx.Rngs(0),
  )


@pytest.fixture(scope="module")
def random_batch():
  rng = np.random.default_rng(0)
  xs = [
    rng.normal(size=(3, LENS[0], 5)).astype(np.float32),
    rng.normal(size=(3, LENS[1], 4)).astype(np.float32),
  ]
  masks = [np.arange(LENS[0])[None] < np.array([[6], [4], [3]]), np.ones((3, LENS[1]), bool)]
  return {
    "x": xs,
    "mask": masks,
    "label": np.array([0, 1, 2], np.int32),
    "weight": np.ones(3, np.float32),
  }


def test_attnxgrad_mixture_equals_direct_gradient(random_model, random_batch):
  model = random_model
  attr = attribute(model, random_batch, kinds=KINDS)  # every expert + mixture, one backward pass
  hs = model.project([jnp.asarray(x) for x in random_batch["x"]])
  masks = [jnp.asarray(m) for m in random_batch["mask"]]
  target = attr.target
  length = sum(LENS)
  zero = jnp.zeros((model.num_experts, model.num_layers, 3, model.num_heads, length, length))

  @nnx.jit
  def direct(model, hs, masks, target, zero):
    def score(delta, which):
      out = model.forward_projected(hs, masks, attn_delta=delta, return_attn=True)
      lg = out.logits if which < 0 else out.expert_logits[:, which]
      return targets.target_score(lg, target, "multiclass").sum(), out.attn

    qm = jnp.concatenate(masks, -1)
    g, attn = jax.grad(score, has_aux=True)(zero, -1)
    mix = sum(
      token_importance(rollout(attention_relevance(attn[e], g[e])), qm)
      for e in range(model.num_experts)
    )
    g1, _ = jax.grad(score, has_aux=True)(zero, 1)
    e1 = token_importance(rollout(attention_relevance(attn[1], g1[1])), qm)
    return mix, e1

  mix, e1 = direct(model, hs, masks, target, zero)
  raw = jnp.concatenate(attr.raw, -1)  # [B, V, L]
  np.testing.assert_allclose(np.asarray(raw[:, -1]), np.asarray(mix), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(raw[:, 1]), np.asarray(e1), rtol=1e-4, atol=1e-6)
  # attn rollout mixture = sum_e w_e s_e.
  a = attribute(model, random_batch, method="attn", kinds=KINDS)
  raw = np.asarray(jnp.concatenate(a.raw, -1))
  w = np.asarray(a.weights)
  np.testing.assert_allclose(raw[:, -1], np.einsum("be,bel->bl", w, raw[:, :-1]), rtol=1e-5)


def test_ig_completeness_and_chunking(random_model, random_batch):
  model = random_model
  means = [np.full(5, 0.3, np.float32), np.full(4, -0.2, np.float32)]
  # Expert views with a zero baseline, the mixture with the mean baseline (the gate L2-normalises
  # the pooled features, which is discontinuous at exactly zero: f(0) != lim f(a x) as a -> 0).
  kw = dict(method="ig", kinds=KINDS, ig_steps=128, means=means)
  a = attribute(model, random_batch, ig_baseline="mean", steps_per_call=48, **kw)
  hs = model.project([jnp.asarray(x) for x in random_batch["x"]])
  masks = [jnp.asarray(m) for m in random_batch["mask"]]
  from flmoe_jax.explain import masking

  fills = masking.fill_vectors(model, means, "mean")
  base = [jnp.broadcast_to(f, h.shape) for f, h in zip(fills, hs)]
  out, out0 = model.forward_projected(hs, masks), model.forward_projected(base, masks)
  t = a.target
  signed = sum(np.asarray(s).sum(-1) for s in a.signed)  # [B, V]
  for v, e in enumerate(a.view_experts):
    lg, lg0 = (
      (out.logits, out0.logits) if e < 0 else (out.expert_logits[:, e], out0.expert_logits[:, e])
    )
    diff = np.asarray(
      targets.target_score(lg, t, "multiclass") - targets.target_score(lg0, t, "multiclass")
    )
    np.testing.assert_allclose(signed[:, v], diff, rtol=0.03, atol=3e-3)
  # Chunking over steps changes nothing but memory.
  b = attribute(model, random_batch, ig_baseline="mean", steps_per_call=None, **kw)
  for x, y in zip(a.signed, b.signed):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


def test_views_targets_and_bad_input(random_model, random_batch):
  model = random_model
  one = attribute(model, random_batch, expert="syn", kinds=KINDS)
  assert one.views == ("syn",) and one.view_experts == (2,)
  assert one.view("syn")[0].shape == (3, LENS[0])
  true = attribute(model, random_batch, expert="mixture", target="true", kinds=KINDS)
  np.testing.assert_array_equal(np.asarray(true.target).argmax(-1), random_batch["label"])
  with pytest.raises(ExplainError, match="method"):
    attribute(model, random_batch, method="gradcam", kinds=KINDS)
  with pytest.raises(ExplainError, match="out of range"):
    attribute(model, random_batch, expert=7, kinds=KINDS)
  with pytest.raises(ExplainError, match="unknown expert"):
    attribute(model, random_batch, expert="uni_9", kinds=KINDS)
  with pytest.raises(ExplainError, match="steps_per_call"):
    attribute(model, random_batch, kinds=KINDS, steps_per_call=0)
  hs = model.project([jnp.asarray(x) for x in random_batch["x"]])
  with pytest.raises(ExplainError, match="labels"):
    attribute(model, (hs, random_batch["mask"]), target="true", kinds=KINDS, task_type="multiclass")
  with pytest.raises(ExplainError, match="task_type"):
    attribute(model, (hs, random_batch["mask"]), kinds=KINDS)
  with pytest.raises(ExplainError, match="mask shape"):
    attribute(
      model, (hs, [m[:, :3] for m in random_batch["mask"]]), kinds=KINDS, task_type="multiclass"
    )
