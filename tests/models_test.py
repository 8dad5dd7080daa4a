"""Unit tests of the FL-I2MoE model layer: layers, experts, gate, model invariants and losses.

Models are tiny (H = 8) and the number of jitted functions is kept small: compilation dominates on
a 2-core CPU.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from flmoe_jax.models import (
  Attention,
  DenseTransformer,
  FLI2MoE,
  I2MoE,
  ModelConfig,
  dropout,
  fl_i2moe_loss,
  interaction_loss,
  l2_normalize,
  linear,
  losses,
  masked_mean,
  perturb_variants,
  sinusoidal_positions,
  task_loss,
  triplet_loss,
)

DIMS = (6, 5)
LENS = (5, 4)
B, H, C = 3, 8, 3
KW = dict(input_dims=DIMS, num_classes=C, hidden_dim=H, num_heads=2, num_layers=1, rw_hidden=8)


def _inputs(seed=0, lens=LENS):
  rng = np.random.default_rng(seed)
  xs = [jnp.asarray(rng.normal(size=(B, t, d)), jnp.float32) for t, d in zip(lens, DIMS)]
  text_mask = np.arange(lens[0])[None, :] < np.array([[5], [3], [1]])  # padded "text"
  masks = [jnp.asarray(text_mask), jnp.ones((B, lens[1]), bool)]
  return xs, masks


@pytest.fixture(scope="module")
def model():
  return FLI2MoE(ModelConfig(**KW, identical_expert_init=False), rngs=nnx.Rngs(0))


# One jitted function per entry point keeps the compile count small.
@nnx.jit
def _eval(model, xs, masks):
  return model(xs, masks)


@nnx.jit
def _projected(model, hs, masks):
  return model.forward_projected(hs, masks, return_attn=True)


@nnx.jit
def _train(model, xs, masks, noise_key):
  return model.train_outputs(xs, masks, dropout_key=None, noise_key=noise_key)


# ------------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------------


def test_sinusoidal_positions_formula():
  pe = np.asarray(sinusoidal_positions(3, 6))
  np.testing.assert_allclose(pe[0], [0, 1, 0, 1, 0, 1], atol=1e-7)
  p, expected = 2, []
  for i in range(6):
    angle = p / 10000 ** (2 * (i // 2) / 6)
    expected.append(math.sin(angle) if i % 2 == 0 else math.cos(angle))
  np.testing.assert_allclose(pe[2], expected, rtol=1e-6)


def test_torch_init_bounds_and_flax_default():
  t = linear(50, 40, torch_init=True, rngs=nnx.Rngs(0))
  bound = 1 / math.sqrt(50)
  for w in (np.asarray(t.kernel[...]), np.asarray(t.bias[...])):
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound  # uniform(+-1/sqrt(fan_in))
  f = linear(50, 40, torch_init=False, rngs=nnx.Rngs(0))
  assert np.all(np.asarray(f.bias[...]) == 0)
  assert np.abs(np.asarray(f.kernel[...])).max() > bound  # lecun_normal has unbounded tails


def test_dropout_explicit_key():
  x = jnp.ones((1000,))
  assert dropout(x, 0.5, None) is x
  y = np.asarray(dropout(x, 0.5, jax.random.key(0)))
  assert set(np.unique(y)) <= {0.0, 2.0}
  assert 0.4 < (y == 0).mean() < 0.6
  assert not np.array_equal(y, np.asarray(dropout(x, 0.5, jax.random.key(1))))


def test_masked_mean_and_normalize():
  x = jnp.asarray([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 9.0]]])
  m = jnp.asarray([[True, True, False], [False, False, False]])
  np.testing.assert_allclose(masked_mean(x, m), [[2.0, 3.0], [0.0, 0.0]])
  np.testing.assert_allclose(
    l2_normalize(jnp.asarray([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0, 0]]
  )


def test_attention_masking_and_fully_masked_rows():
  attn = Attention(8, 2, dropout=0.5, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 4, 8))
  mask = jnp.asarray([[True, True, False, False], [False, False, False, False]])
  out, probs = nnx.jit(lambda a, x, m: a(x, m))(attn, x, mask)
  probs = np.asarray(probs)
  assert probs.shape == (2, 2, 4, 4)
  np.testing.assert_allclose(probs[0].sum(-1), 1.0, rtol=1e-6)
  assert np.all(probs[0, :, :, 2:] == 0)  # padded keys get no attention
  assert np.all(probs[1] == 0) and np.all(np.isfinite(np.asarray(out)))
  # The fused kv layout: head h of K is kv columns h*hd:(h+1)*hd, V starts at column H.
  k_manual = (x @ attn.kv.kernel[...][:, :8]).reshape(2, 4, 2, 4)
  q = (x @ attn.q.kernel[...]).reshape(2, 4, 2, 4)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k_manual) / 2.0
  ref = jax.nn.softmax(jnp.where(mask[0][None, None, :], logits[0], -jnp.inf), -1)
  np.testing.assert_allclose(probs[0], ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Model invariants
# ------------------------------------------------------------------------------------------------


def test_eval_shapes_and_weights_sum_to_one(model):
  xs, masks = _inputs()
  out = _eval(model, xs, masks)
  e = model.num_experts
  assert model.expert_names == ("uni_0", "uni_1", "syn", "red")
  assert out.logits.shape == (B, C) and out.expert_logits.shape == (B, e, C)
  assert out.weights.shape == (B, e) and out.latents.shape == (B, e, 2 * H)
  np.testing.assert_allclose(np.asarray(out.weights).sum(-1), 1.0, rtol=1e-6)
  mix = np.einsum("be,bec->bc", np.asarray(out.weights), np.asarray(out.expert_logits))
  np.testing.assert_allclose(np.asarray(out.logits), mix, rtol=1e-5, atol=1e-6)


def test_padding_invariance(model):
  xs, masks = _inputs()
  base = np.asarray(_eval(model, xs, masks).logits)
  # (a) new random values at already padded text positions (the text is the FIRST modality).
  noise = jax.random.normal(jax.random.key(3), xs[0].shape) * 50
  text = jnp.where(masks[0][..., None], xs[0], noise)
  np.testing.assert_allclose(
    np.asarray(_eval(model, [text, xs[1]], masks).logits), base, rtol=1e-5, atol=1e-5
  )
  # (b) extra padded tokens appended to the LAST modality (earlier PE offsets stay unchanged).
  extra = jax.random.normal(jax.random.key(4), (B, 3, DIMS[1])) * 50
  xs_b = [xs[0], jnp.concatenate([xs[1], extra], axis=1)]
  masks_b = [masks[0], jnp.concatenate([masks[1], jnp.zeros((B, 3), bool)], axis=1)]
  out_b = _eval(model, xs_b, masks_b)
  np.testing.assert_allclose(np.asarray(out_b.logits), base, rtol=1e-5, atol=1e-5)
  # ...whereas changing a REAL token does change the output (the test can fail).
  xs_c = [xs[0].at[0, 0].add(5.0), xs[1]]
  assert np.abs(np.asarray(_eval(model, xs_c, masks).logits) - base).max() > 1e-4


def test_fully_masked_modality_is_finite(model):
  xs, masks = _inputs()
  masks = [masks[0].at[1].set(False), masks[1]]
  out = _eval(model, xs, masks)
  assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(out))


def test_stacked_experts_equal_single_experts(model):
  xs, masks = _inputs()
  hs = model.project(xs)
  out = _projected(model, hs, masks)
  run_one = nnx.jit(lambda ex, hs, ms: ex(hs, ms, return_attn=True))
  for e in range(model.num_experts):
    logits, latent, attn = run_one(model.experts.expert(e), hs, masks)
    np.testing.assert_allclose(np.asarray(out.expert_logits[:, e]), logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out.latents[:, e]), latent, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out.attn[e]), attn, rtol=1e-5, atol=1e-6)
  # Independent init: the experts really differ.
  assert np.ptp(np.asarray(out.expert_logits), axis=1).max() > 1e-3


def test_identical_init_gives_identical_experts():
  m = FLI2MoE(ModelConfig(**KW), rngs=nnx.Rngs(0))  # identical_expert_init=True is the default
  kernel = np.asarray(m.experts.stacked.layers[0].attn.q.kernel[...])
  assert kernel.shape[0] == 4 and all(np.array_equal(kernel[0], k) for k in kernel)
  xs, masks = _inputs()
  out = _eval(m, xs, masks)
  el = np.asarray(out.expert_logits)
  np.testing.assert_array_equal(el, np.broadcast_to(el[:, :1], el.shape))


def test_expert_sharding_metadata(model):
  specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
  expert_specs = jax.tree.leaves(specs["experts"], is_leaf=lambda x: isinstance(x, P))
  assert expert_specs and all(
    s[0] == "expert" and all(a is None for a in s[1:]) for s in expert_specs
  )
  other = jax.tree.leaves(specs["reweight"], is_leaf=lambda x: isinstance(x, P))
  assert all(s == P() for s in other)


def test_optimizer_over_annotated_params_needs_no_mesh(model):
  """The logical "expert" annotation must not force a mesh on variables copied from the params."""
  import optax

  opt = nnx.Optimizer(model, optax.adam(1e-4), wrt=nnx.Param)
  mu = nnx.get_partition_spec(nnx.state(opt))
  assert any(isinstance(p, P) and p and p[0] == "expert" for p in jax.tree.leaves(mu))


def test_expert_sharded_forward_matches_unsharded(model):
  """Experts sharded over a (data=4, expert=2) mesh via the logical "expert" axis: same outputs."""
  from jax.sharding import AxisType, NamedSharding

  xs, masks = _inputs()
  xs = [jnp.concatenate([x, x[:1]]) for x in xs]  # batch 4, divisible by the data axis
  masks = [jnp.concatenate([m, m[:1]]) for m in masks]
  ref = np.asarray(_eval(model, xs, masks).logits)
  mesh = jax.make_mesh((4, 2), ("data", "expert"), axis_types=(AxisType.Auto, AxisType.Auto))
  with jax.set_mesh(mesh), nnx.logical_axis_rules([("expert", "expert")]):
    state = nnx.state(model)
    specs = nnx.get_partition_spec(state)
    state = jax.tree.map(lambda x, p: jax.device_put(x, NamedSharding(mesh, p)), state, specs)
    sharded = nnx.merge(nnx.graphdef(model), state)
    kernel = sharded.experts.stacked.head.kernel[...]
    assert kernel.sharding.spec == P("expert", None, None)
    put = lambda a: jax.device_put(a, NamedSharding(mesh, P("data")))  # noqa: E731
    out = _eval(sharded, [put(x) for x in xs], [put(m) for m in masks])
  np.testing.assert_allclose(np.asarray(out.logits), ref, rtol=1e-5, atol=1e-6)


def test_attention_outputs_and_attn_delta_gradient(model):
  xs, masks = _inputs()
  hs = model.project(xs)
  e, layers_, heads, length = model.num_experts, model.num_layers, model.num_heads, sum(LENS)
  shape = (e, layers_, B, heads, length, length)
  zero = jnp.zeros(shape)

  @nnx.jit
  def score_grad(model, hs, masks, delta):
    # A raw jax.grad closing over the model: what the explanation code does.
    def score(delta):
      o = model.forward_projected(hs, masks, attn_delta=delta, return_attn=True)
      return jnp.sum(o.logits[:, 0]), o

    return jax.grad(score, has_aux=True)(delta)

  g, out = score_grad(model, hs, masks, zero)
  assert out.attn.shape == shape
  np.testing.assert_allclose(
    np.asarray(out.logits), np.asarray(_eval(model, xs, masks).logits), rtol=1e-5, atol=1e-6
  )
  attn = np.asarray(out.attn)
  assert np.all(attn[..., 1, :, :, 3 : LENS[0]] == 0)  # sample 1 has 3 real text tokens
  g = np.asarray(g)
  assert g.shape == shape and np.all(np.isfinite(g))
  assert all(np.abs(g[i]).max() > 0 for i in range(e))  # every expert's attention matters


def test_train_outputs_consistent_with_eval(model):
  xs, masks = _inputs()
  noise_key = jax.random.key(5)
  out = _train(model, xs, masks, noise_key)
  e, m = model.num_experts, model.num_modalities
  assert out.latents.shape == (e, 1 + m, B, m * H)
  assert out.logits.shape == (B, C) and out.expert_logits.shape == (B, e, C)
  ev = _eval(model, xs, masks)
  np.testing.assert_allclose(np.asarray(out.logits), np.asarray(ev.logits), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    np.asarray(out.latents[:, 0]), np.moveaxis(np.asarray(ev.latents), 1, 0), rtol=1e-5, atol=1e-6
  )
  # Variant 1 (modality 0 perturbed) equals a plain forward on that perturbed input.
  hs = model.project(xs)
  pert = [perturb_variants(hs, noise_key)[0][1], hs[1]]
  p_out = _projected(model, pert, masks)
  np.testing.assert_allclose(
    np.asarray(out.latents[:, 1]),
    np.moveaxis(np.asarray(p_out.latents), 1, 0),
    rtol=1e-5,
    atol=1e-5,
  )


def test_gradients_reach_every_parameter(model):
  xs, masks = _inputs()
  labels = jnp.asarray([0, 2, 1])

  @nnx.jit
  def grads(model, xs, masks, dropout_key):
    def loss_fn(model):
      out = model.train_outputs(xs, masks, dropout_key=dropout_key, noise_key=jax.random.key(9))
      return fl_i2moe_loss(out, labels, task_type="multiclass", lambda_int=0.5)

    return nnx.grad(loss_fn, has_aux=True)(model)

  g, aux = grads(model, xs, masks, jax.random.key(0))
  assert aux["int_terms"].shape == (model.num_experts,)
  assert np.all(np.abs(np.asarray(aux["int_terms"])) > 0)
  # Dropout is live when a key is given (same noise, different dropout key -> different loss).
  _, aux2 = grads(model, xs, masks, jax.random.key(1))
  assert abs(float(aux["task"]) - float(aux2["task"])) > 1e-6
  flat = nnx.to_flat_state(g)
  assert len(flat) == len(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  for path, var in flat:
    a = np.asarray(var[...])
    assert np.all(np.isfinite(a)), path
    if path[0] == "experts":  # every expert's slice gets its own gradient
      assert all(np.abs(a[e]).max() > 0 for e in range(model.num_experts)), path
    else:
      assert np.abs(a).max() > 0, path


def test_learned_positions():
  L_MAX = sum(LENS) + 3  # room for the padding appended below
  m = FLI2MoE(
    ModelConfig(**KW, identical_expert_init=False, position="learned", max_positions=L_MAX),
    rngs=nnx.Rngs(0),
  )
  table = np.asarray(m.experts.stacked.position_table[...])
  assert table.shape == (m.num_experts, L_MAX, H)
  assert 0.8 < table.std() < 1.2  # N(0, 1) rows, not the sinusoid's bounded values
  xs, masks = _inputs()
  base = np.asarray(_eval(m, xs, masks).logits)
  # Each expert equals its standalone copy (the table travels with the expert's kwargs).
  hs = m.project(xs)
  out = _projected(m, hs, masks)
  logits, _, _ = nnx.jit(lambda ex, hs, ms: ex(hs, ms, return_attn=True))(
    m.experts.expert(2), hs, masks
  )
  np.testing.assert_allclose(np.asarray(out.expert_logits[:, 2]), logits, rtol=1e-5, atol=1e-6)
  # Padding appended to the last modality does not change the output...
  extra = jax.random.normal(jax.random.key(4), (B, 3, DIMS[1])) * 50
  xs_b = [xs[0], jnp.concatenate([xs[1], extra], axis=1)]
  masks_b = [masks[0], jnp.concatenate([masks[1], jnp.zeros((B, 3), bool)], axis=1)]
  np.testing.assert_allclose(np.asarray(_eval(m, xs_b, masks_b).logits), base, atol=1e-5)
  # ...while the rows are used: a new row for one real position changes it.
  m.experts.stacked.position_table[...] = m.experts.stacked.position_table[...].at[:, 0].add(3.0)
  assert np.abs(np.asarray(_eval(m, xs, masks).logits) - base).max() > 1e-4
  # A sequence longer than the table is an error naming both lengths.
  too_long = [jnp.concatenate([xs[0]] * 2, axis=1), xs[1]]
  with pytest.raises(ValueError, match="learned table has 12"):
    m(too_long, [jnp.concatenate([masks[0]] * 2, axis=1), masks[1]])
  with pytest.raises(ValueError, match="max_positions"):
    ModelConfig(**KW, position="learned")
  with pytest.raises(ValueError, match="position 'rope'"):
    ModelConfig(**KW, position="rope", max_positions=9)


def test_dense_transformer():
  dense = DenseTransformer(ModelConfig(**KW), rngs=nnx.Rngs(0))
  assert dense.num_experts == 1 and dense.expert_names == ("dense",)
  xs, masks = _inputs()
  labels = jnp.asarray([0, 2, 1])

  @nnx.jit
  def run(dense, xs, masks):
    ev = dense(xs, masks)

    def loss_fn(dense):
      out = dense.train_outputs(xs, masks, dropout_key=jax.random.key(0), noise_key=None)
      return fl_i2moe_loss(out, labels, task_type="multiclass", lambda_int=0.5)

    (loss, aux), g = nnx.value_and_grad(loss_fn, has_aux=True)(dense)
    tr = dense.train_outputs(xs, masks, dropout_key=None)
    attn = dense.forward_projected(dense.project(xs), masks, return_attn=True).attn
    return ev, tr, loss, aux, g, attn

  ev, tr, loss, aux, g, attn = run(dense, xs, masks)
  assert ev.logits.shape == (B, C) and ev.expert_logits.shape == (B, 1, C)
  np.testing.assert_array_equal(np.asarray(ev.weights), np.ones((B, 1)))
  np.testing.assert_allclose(np.asarray(ev.logits), np.asarray(ev.expert_logits[:, 0]))
  assert tr.latents.shape == (1, 1, B, 2 * H)
  assert attn.shape == (1, 1, B, 2, sum(LENS), sum(LENS))
  assert float(aux["interaction"]) == 0.0 and np.isclose(float(loss), float(aux["task"]))
  assert all(np.abs(np.asarray(v[...])).max() > 0 for _, v in nnx.to_flat_state(g))


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------


def test_task_losses_hand_computed():
  bce = task_loss(jnp.asarray([[0.0, 2.0]]), jnp.asarray([[1, 0]]), "multilabel")
  np.testing.assert_allclose(bce, (math.log(2) + math.log(1 + math.e**2)) / 2, rtol=1e-6)
  ce = task_loss(jnp.asarray([[0.0, math.log(3.0)], [0.0, 0.0]]), jnp.asarray([1, 0]), "multiclass")
  np.testing.assert_allclose(ce, (-math.log(0.75) + math.log(2)) / 2, rtol=1e-6)
  assert np.isclose(task_loss(jnp.zeros((1, 2)), jnp.asarray([1]), "binary"), math.log(2))
  with pytest.raises(ValueError):
    task_loss(jnp.zeros((1, 2)), jnp.asarray([1]), "regression")


def test_triplet_and_cosine_hand_computed():
  a, p, n = jnp.asarray([[0.0, 0.0]]), jnp.asarray([[3.0, 4.0]]), jnp.asarray([[0.0, 1.0]])
  eps = 1e-7
  d_ap = math.hypot(-3 + eps, -4 + eps)
  d_an = math.hypot(0 + eps, -1 + eps)
  np.testing.assert_allclose(triplet_loss(a, p, n), d_ap - d_an + 1.0, rtol=1e-6)
  assert float(triplet_loss(a, n, p)) == 0.0  # hinge clips at zero
  cos = losses.cosine_similarity(
    jnp.asarray([[1.0, 0.0], [0.0, 0.0]]), jnp.asarray([[1.0, 1.0]] * 2)
  )
  np.testing.assert_allclose(cos, [1 / math.sqrt(2), 0.0], rtol=1e-6)
  z, zp = jnp.asarray([[1.0, 0.0]]), jnp.asarray([[[0.0, 1.0]], [[-1.0, 0.0]]])
  np.testing.assert_allclose(losses.synergy_loss(z, zp), -0.5, atol=1e-7)
  np.testing.assert_allclose(losses.redundancy_loss(z, zp), 1.5, atol=1e-7)


def _interaction_loss_reference(latents):
  """The docs/method.md 2.2 formulas with explicit loops (float64 numpy)."""
  lat = np.asarray(latents, np.float64)
  e, v, _, _ = lat.shape
  m = v - 1

  def dist(a, b):
    return np.sqrt(((a - b + 1e-7) ** 2).sum(-1))

  def cos(a, b):
    na = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return (na * nb).sum(-1)

  terms = []
  for i in range(m):
    z = lat[i]
    tot = 0.0
    for j in range(m):
      if j != i:
        tot += np.maximum(dist(z[0], z[1 + j]) - dist(z[0], z[1 + i]) + 1.0, 0).mean()
    terms.append(tot / (m - 1))
  terms.append(np.mean([cos(lat[m][0], lat[m][1 + j]).mean() for j in range(m)]))
  terms.append(np.mean([(1 - cos(lat[m + 1][0], lat[m + 1][1 + j])).mean() for j in range(m)]))
  return np.mean(terms), np.asarray(terms)


@pytest.mark.parametrize("m", [2, 3])
def test_interaction_loss_matches_formula(m):
  lat = jax.random.normal(jax.random.key(m), (m + 2, 1 + m, 4, 6))
  # Make some hinges active and some inactive: shrink a few perturbations.
  lat = lat.at[:, 1].multiply(0.1)
  total, terms = jax.jit(interaction_loss)(lat)
  ref_total, ref_terms = _interaction_loss_reference(lat)
  assert terms.shape == (m + 2,)
  np.testing.assert_allclose(terms, ref_terms, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(total, ref_total, rtol=1e-5)
  with pytest.raises(ValueError):
    interaction_loss(lat[:-1])


def test_interaction_loss_hand_case():
  # M = 2, B = 1, D = 2. uni_0: own perturbation far (d=3), other near (d=0) -> hinge 0.
  z = np.zeros((4, 3, 1, 2), np.float32)
  z[0, 0], z[0, 1], z[0, 2] = [0, 0], [3, 0], [0, 0]
  # uni_1: own perturbation (variant 2) at d=1, other (variant 1) at d=2 -> 2 - 1 + 1 = 2.
  z[1, 0], z[1, 1], z[1, 2] = [0, 0], [2, 0], [1, 0]
  z[2, 0], z[2, 1], z[2, 2] = [1, 0], [0, 1], [-1, 0]  # syn: cos 0 and -1 -> -0.5
  z[3, 0], z[3, 1], z[3, 2] = [1, 0], [2, 0], [0, 1]  # red: 1 - cos = 0 and 1 -> 0.5
  total, terms = jax.jit(interaction_loss)(jnp.asarray(z))
  np.testing.assert_allclose(terms, [0.0, 2.0, -0.5, 0.5], atol=1e-5)
  np.testing.assert_allclose(total, 0.5, atol=1e-5)


def test_perturb_variants_three_modalities():
  hs = [jnp.full((2, t, 4), float(i + 1)) for i, t in enumerate((3, 2, 5))]
  var = perturb_variants(hs, jax.random.key(0))
  assert [v.shape for v in var] == [(4, 2, 3, 4), (4, 2, 2, 4), (4, 2, 5, 4)]
  for j, v in enumerate(var):
    for k in range(4):
      same = np.array_equal(np.asarray(v[k]), np.asarray(hs[j]))
      assert same == (k != 1 + j), (j, k)  # only variant 1+j replaces modality j
  noise = np.asarray(var[2][3])
  assert abs(noise.mean()) < 0.5 and 0.5 < noise.std() < 1.5


def test_fl_i2moe_loss_combines_terms():
  from flmoe_jax.models import TrainOutput

  lat = jax.random.normal(jax.random.key(0), (4, 3, 2, 5))
  out = TrainOutput(
    logits=jnp.asarray([[0.0, 1.0], [2.0, 0.0]]),
    expert_logits=jnp.zeros((2, 4, 2)),
    weights=jnp.full((2, 4), 0.25),
    latents=lat,
  )
  labels = jnp.asarray([1, 0])
  loss_fn = jax.jit(lambda o, y: fl_i2moe_loss(o, y, task_type="multiclass", lambda_int=0.5))
  total, aux = loss_fn(out, labels)
  inter, terms = jax.jit(interaction_loss)(lat)
  np.testing.assert_allclose(
    total, task_loss(out.logits, labels, "multiclass") + 0.5 * inter, rtol=1e-6
  )
  np.testing.assert_allclose(aux["int_terms"], terms)


# ------------------------------------------------------------------------------------------------
# Role-consistency loss (beyond the paper)
# ------------------------------------------------------------------------------------------------


def test_fill_variants_replace_one_then_all_modalities():
  hs = [jnp.full((2, t, 4), float(i + 1)) for i, t in enumerate((3, 2))]
  fills = [jnp.full((4,), -1.0), jnp.full((4,), -2.0)]
  var = losses.fill_variants(hs, fills)
  assert [v.shape for v in var] == [(3, 2, 3, 4), (3, 2, 2, 4)]
  for j, v in enumerate(var):
    for k in range(3):
      filled = k in (j, 2)  # variant j fills modality j, variant M fills everything
      expected = np.asarray(fills[j]) if filled else np.asarray(hs[j][0, 0])
      np.testing.assert_array_equal(np.asarray(v[k]), np.broadcast_to(expected, v[k].shape))


def _role_logits(f_uni0, f_uni1, f_syn, f_red):
  """Logits [E, B, C] and absent logits [E, M+1, B, C] of four experts given as f(a, b) where a, b are
  per-sample modality 'values' (0 = absent)."""
  a = np.array([1.0, -1.0, 2.0])
  b = np.array([0.5, 1.0, -1.0])
  zero = np.zeros(3)
  fs = (f_uni0, f_uni1, f_syn, f_red)
  clean = np.stack([f(a, b) for f in fs])[..., None]
  absent = np.stack([np.stack([f(zero, b), f(a, zero), f(zero, zero)]) for f in fs])[..., None]
  return jnp.asarray(clean), jnp.asarray(absent)


def test_role_consistency_zero_when_experts_obey_their_roles():
  clean, absent = _role_logits(
    lambda a, b: 2 * a,  # uni_0 reads modality 0 only
    lambda a, b: np.tanh(b),  # uni_1 reads modality 1 only
    lambda a, b: a * b + 0.3,  # syn: a product, constant as soon as one side is absent
    lambda a, b: np.zeros_like(a) + 0.7,  # red: constant (trivially invariant)
  )
  np.testing.assert_allclose(losses.role_consistency_losses(clean, absent), 0.0, atol=1e-7)


def test_role_consistency_hand_computed():
  # Every expert computes a + b: uni_0 pays for modality 1 (mean b^2), uni_1 for modality 0 (mean a^2),
  # syn for both single-absent variants ((a^2 + b^2) / 2), red likewise.
  clean, absent = _role_logits(*(lambda a, b: a + b,) * 4)
  a2, b2 = np.mean(np.array([1.0, -1.0, 2.0]) ** 2), np.mean(np.array([0.5, 1.0, -1.0]) ** 2)
  np.testing.assert_allclose(
    losses.role_consistency_losses(clean, absent),
    [b2, a2, (a2 + b2) / 2, (a2 + b2) / 2],
    rtol=1e-6,
  )


def test_train_outputs_absent_logits_match_filled_forward(model):
  xs, masks = _inputs()
  means = [jnp.asarray(np.random.default_rng(1).normal(size=d), jnp.float32) for d in DIMS]

  @nnx.jit
  def train_fill(model, xs, masks):
    return model.train_outputs(
      xs, masks, dropout_key=None, noise_key=jax.random.key(5), fill_means=means
    )

  out = train_fill(model, xs, masks)
  e, m = model.num_experts, model.num_modalities
  assert out.latents.shape == (e, 1 + m, B, m * H)
  assert out.absent_logits.shape == (e, m + 1, B, C)
  # Variant 0 (modality 0 at its projected mean) equals a plain forward on that input.
  hs = model.project(xs)
  fill0 = model.project([mu[None, None] for mu in means])[0][0, 0]
  p_out = _projected(model, [jnp.broadcast_to(fill0, hs[0].shape), hs[1]], masks)
  np.testing.assert_allclose(
    np.asarray(out.absent_logits[:, 0]),
    np.moveaxis(np.asarray(p_out.expert_logits), 1, 0),
    rtol=1e-5,
    atol=1e-5,
  )
  # The gate ran on the same filled input.
  assert out.absent_weights.shape == (m + 1, B, e)
  np.testing.assert_allclose(
    np.asarray(out.absent_weights[0]), np.asarray(p_out.weights), rtol=1e-5, atol=1e-6
  )
  labels = jnp.asarray([0, 2, 1])
  total, aux = fl_i2moe_loss(
    out,
    labels,
    task_type="multiclass",
    lambda_int=0.5,
    lambda_role=2.0,
    lambda_missing=3.0,
    lambda_decor=4.0,
    lambda_red_alone=5.0,
    lambda_syn_residual=6.0,
  )
  np.testing.assert_allclose(
    total,
    aux["task"]
    + 0.5 * aux["interaction"]
    + 2.0 * aux["role"]
    + 3.0 * aux["missing"]
    + 4.0 * aux["decor"]
    + 5.0 * aux["red_alone"]
    + 6.0 * aux["syn_residual"],
    rtol=1e-6,
  )
  # The redundancy expert (last) alone, modality 0 absent and modality 1 absent, averaged.
  red_expected = (
    task_loss(p_out.expert_logits[:, -1], labels, "multiclass")
    + task_loss(
      _projected(
        model, [hs[0], jnp.broadcast_to(model.project_means(means)[1], hs[1].shape)], masks
      ).expert_logits[:, -1],
      labels,
      "multiclass",
    )
  ) / 2
  np.testing.assert_allclose(aux["red_alone"], red_expected, rtol=1e-5)
  np.testing.assert_allclose(
    aux["decor"], losses.uniqueness_decorrelation_loss(out.expert_logits, m), rtol=1e-6
  )
  assert aux["role_terms"].shape == (e,) and float(aux["role"]) > 0
  # The missing term is the task loss of the modality-0-absent mixture, averaged with modality 1's.
  p_out1 = _projected(
    model, [hs[0], jnp.broadcast_to(model.project_means(means)[1], hs[1].shape)], masks
  )
  expected = (
    task_loss(p_out.logits, labels, "multiclass") + task_loss(p_out1.logits, labels, "multiclass")
  ) / 2
  np.testing.assert_allclose(aux["missing"], expected, rtol=1e-5)


def test_synergy_residual_loss_trains_the_synergy_expert_alone_at_full_weight():
  # Value: the task loss of (the other experts' weighted logits + the synergy expert's logits at
  # weight 1). Gradient: the synergy expert's logits only, unscaled by its gate weight.
  rng = np.random.default_rng(3)
  b, e, c = 5, 4, 3
  expert_logits = jnp.asarray(rng.normal(size=(b, e, c)), jnp.float32)
  weights = jax.nn.softmax(jnp.asarray(rng.normal(size=(b, e)), jnp.float32))
  labels = jnp.asarray([0, 2, 1, 1, 0])

  def term(expert_logits, weights):
    mixture = jnp.einsum("be,bec->bc", weights, expert_logits)
    return losses.synergy_residual_loss(mixture, expert_logits, weights, labels, "multiclass")

  others = np.asarray(jnp.einsum("be,bec->bc", weights, expert_logits)) - np.asarray(
    weights[:, 2:3] * expert_logits[:, 2]
  )
  expected = task_loss(jnp.asarray(others) + expert_logits[:, 2], labels, "multiclass")
  np.testing.assert_allclose(term(expert_logits, weights), expected, rtol=1e-6)
  g_logits, g_weights = jax.grad(term, argnums=(0, 1))(expert_logits, weights)
  assert np.abs(np.asarray(g_weights)).max() == 0.0
  assert np.abs(np.asarray(g_logits)[:, [0, 1, 3]]).max() == 0.0
  g_syn = jax.grad(lambda z: task_loss(jnp.asarray(others) + z, labels, "multiclass"))(
    expert_logits[:, 2]
  )
  np.testing.assert_allclose(np.asarray(g_logits)[:, 2], np.asarray(g_syn), rtol=1e-5, atol=1e-7)


def test_train_outputs_without_noise_variants_match_the_full_forward(model):
  # With the interaction weight at 0 the training step skips the M noise variants: what the other
  # terms read (clean and mean-filled logits, gate weights) must not change.
  xs, masks = _inputs()
  means = [jnp.asarray(np.random.default_rng(2).normal(size=d), jnp.float32) for d in DIMS]

  @nnx.jit
  def outputs(model, xs, masks, noise_key):
    return model.train_outputs(xs, masks, dropout_key=None, noise_key=noise_key, fill_means=means)

  full = outputs(model, xs, masks, jax.random.key(5))
  lean = outputs(model, xs, masks, None)
  e, m = model.num_experts, model.num_modalities
  assert lean.latents.shape == (e, 1, B, m * H)
  for name in ("logits", "expert_logits", "weights", "absent_logits", "absent_weights"):
    np.testing.assert_allclose(
      np.asarray(getattr(lean, name)), np.asarray(getattr(full, name)), rtol=1e-5, atol=1e-6
    )
  np.testing.assert_allclose(
    np.asarray(lean.latents[:, 0]), np.asarray(full.latents[:, 0]), rtol=1e-5, atol=1e-6
  )
  labels = jnp.asarray([0, 2, 1])
  kw = dict(
    task_type="multiclass", lambda_int=0.0, lambda_role=1.0, lambda_missing=1.0, lambda_decor=1.0
  )
  total_full, _ = fl_i2moe_loss(full, labels, **kw)
  total_lean, aux = fl_i2moe_loss(lean, labels, **kw)
  assert float(aux["interaction"]) == 0.0
  np.testing.assert_allclose(total_lean, total_full, rtol=1e-5)


def test_missing_modality_loss_prefers_one_redundant_expert_to_two_additive_ones():
  # A label carried by two copies of one bit b (one per modality). Both solutions below give the
  # same clean mixture logit 2b (weights 1/2 each): "additive" (expert i gives 2b when its own copy is
  # present, 0 otherwise) and "redundant" (each expert gives 2b when either copy is present).
  # With one modality absent the additive mixture falls to b, the redundant one stays at 2b; only the
  # missing-modality loss tells them apart, and it prefers the redundant one.
  b = np.array([1.0, -1.0, 1.0, -1.0])
  labels = jnp.asarray((b > 0).astype(int))
  weights = jnp.full((3, 4, 2), 0.5)  # [M+1, B, E]

  def two_class(z):  # logit z -> 2-class logits [.., B, 2]
    return np.stack([np.zeros_like(z), z], -1)

  # absent[e, j]: expert e with modality j absent (j = 2: both absent).
  additive = two_class(np.stack([[0 * b, 2 * b, 0 * b], [2 * b, 0 * b, 0 * b]]))
  redundant = two_class(np.stack([[2 * b, 2 * b, 0 * b], [2 * b, 2 * b, 0 * b]]))
  l_add = losses.missing_modality_loss(jnp.asarray(additive), weights, labels, "multiclass")
  l_red = losses.missing_modality_loss(jnp.asarray(redundant), weights, labels, "multiclass")
  np.testing.assert_allclose(l_add, np.log1p(np.exp(-1.0)), rtol=1e-6)
  np.testing.assert_allclose(l_red, np.log1p(np.exp(-2.0)), rtol=1e-6)


def test_redundancy_alone_loss_reads_only_the_redundancy_expert_with_one_modality_absent():
  # Labels from one bit b. The redundancy expert (last) gives 3b whichever modality is absent; the
  # other experts, and the all-absent variant, are wrong on purpose: the term must not read them.
  b = np.array([1.0, -1.0, -1.0, 1.0])
  labels = jnp.asarray((b > 0).astype(int))
  e, m = 4, 2

  def two_class(z):  # logit z -> 2-class logits [.., B, 2]
    return np.stack([np.zeros_like(z), z], -1)

  absent = np.stack([two_class(np.stack([-5 * b] * (m + 1))) for _ in range(e)])  # [E, M+1, B, 2]
  absent[-1, :m] = two_class(np.stack([3 * b, 3 * b]))
  got = losses.redundancy_alone_loss(jnp.asarray(absent), labels, "multiclass")
  np.testing.assert_allclose(got, np.log1p(np.exp(-3.0)), rtol=1e-5)
  # A redundancy expert that says nothing with either modality absent pays log 2.
  absent[-1, :m] = 0.0
  got = losses.redundancy_alone_loss(jnp.asarray(absent), labels, "multiclass")
  np.testing.assert_allclose(got, np.log(2.0), rtol=1e-5)
  # One modality read only: half the variants are right (3b), half say nothing.
  absent[-1, 0] = two_class(3 * b)
  got = losses.redundancy_alone_loss(jnp.asarray(absent), labels, "multiclass")
  np.testing.assert_allclose(got, (np.log1p(np.exp(-3.0)) + np.log(2.0)) / 2, rtol=1e-5)


def test_uniqueness_decorrelation_loss_hand_computed():
  a = np.array([1.0, -1.0, 1.0, -1.0])  # centred, variance 1
  b = np.array([1.0, 1.0, -1.0, -1.0])  # orthogonal to a
  zero = np.zeros(4)

  def logits(u0, u1, syn=zero, red=zero):  # [B, E=4, C=1]
    return jnp.asarray(np.stack([u0, u1, syn, red], 1)[..., None])

  loss = losses.uniqueness_decorrelation_loss
  np.testing.assert_allclose(loss(logits(a, b), 2), 0.0, atol=1e-7)
  # cov(a, -2a + 3) = -2; unit = mean expert variance = (1 + 4 + 0 + 0) / 4.
  np.testing.assert_allclose(loss(logits(a, -2 * a + 3), 2), (2 / 1.25) ** 2, rtol=1e-5)
  # Near-constant uniqueness experts beside a strong synergy expert pay (almost) nothing, even though
  # they are perfectly correlated.
  assert float(loss(logits(1e-3 * a, 1e-3 * a, syn=10 * b), 2)) < 1e-12
  assert float(loss(logits(a, b), 1)) == 0.0  # one modality: no pairs
  # Only the uniqueness experts are pushed; the unit is not trained through.
  g = jax.grad(lambda z: loss(z, 2))(logits(a, a + b, syn=b, red=a))
  assert np.abs(np.asarray(g[:, :2])).sum() > 0
  np.testing.assert_array_equal(np.asarray(g[:, 2:]), 0.0)


@pytest.mark.parametrize("kind", ["fl_i2moe", "dense"])
def test_fused_attention_matches_einsum(kind):
  # The fused path (`jax.nn.dot_product_attention`, XLA backend here) sorts the real tokens first,
  # so text padding in the middle of the sequence must not change anything: same logits and
  # latents as the explicit einsum attention, two layers deep. Calls that need attention maps, an
  # attention delta or dropout take the einsum path whatever the setting (identical outputs).
  cls = FLI2MoE if kind == "fl_i2moe" else DenseTransformer
  cfg = ModelConfig(**{**KW, "num_layers": 2})
  ref = cls(cfg, rngs=nnx.Rngs(3))
  fused = cls(cfg.replace(attention="xla"), rngs=nnx.Rngs(3))
  xs, masks = _inputs(seed=4)
  a, b = _eval(ref, xs, masks), _eval(fused, xs, masks)
  np.testing.assert_allclose(np.asarray(b.logits), np.asarray(a.logits), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(b.latents), np.asarray(a.latents), rtol=1e-5, atol=1e-5)
  hs = ref.project(xs)
  pa, pb = _projected(ref, hs, masks), _projected(fused, hs, masks)
  np.testing.assert_array_equal(np.asarray(pb.attn), np.asarray(pa.attn))
  key = jax.random.key(1)
  da = ref(xs, masks, dropout_key=key).logits
  db = fused(xs, masks, dropout_key=key).logits
  np.testing.assert_array_equal(np.asarray(db), np.asarray(da))
  with pytest.raises(ValueError, match="attention 'flash' not in"):
    cfg.replace(attention="flash")


def test_i2moe_is_fl_i2moe_over_one_pooled_token_per_modality(model):
  """The original I2MoE = the same weights run on each modality's masked mean as its only token:
  blind to token order within a modality, where FL-I2MoE is not."""
  i2 = I2MoE(
    ModelConfig(**KW, identical_expert_init=False), rngs=nnx.Rngs(0)
  )  # the same init as `model`
  xs, masks = _inputs()
  out = _eval(i2, xs, masks)
  hs = model.project(xs)
  pooled = [masked_mean(h, m)[:, None] for h, m in zip(hs, masks, strict=True)]
  want = _projected(model, pooled, [jnp.ones((B, 1), bool)] * 2)
  np.testing.assert_allclose(out.logits, want.logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.weights, want.weights, rtol=1e-5, atol=1e-6)
  # Reverse the patch order: I2MoE's output stays, FL-I2MoE's (positions, attention) moves.
  rev = [xs[0], xs[1][:, ::-1]]
  np.testing.assert_allclose(_eval(i2, rev, masks).logits, out.logits, rtol=1e-5, atol=1e-6)
  assert np.abs(_eval(model, rev, masks).logits - _eval(model, xs, masks).logits).max() > 1e-4
  # Training runs every variant through the pooled experts too.
  tr = _train(i2, xs, masks, jax.random.key(0))
  np.testing.assert_allclose(tr.logits, out.logits, rtol=1e-5, atol=1e-6)
