"""Training losses of FL-I2MoE (docs/method.md 2.1, 2.2) and the modality perturbations they need.

Conventions: latents of all experts and perturbation variants come as one array
[E, 1+M, B, D]; expert order is [uni_0..uni_{M-1}, syn, red]; variant 0 is the clean input and
variant 1+j has modality j replaced by standard-normal noise. All losses are computed in (at least)
float32 whatever the model's compute dtype.

Beyond the paper, `role_consistency_losses` (weight `loss.lambda_role`, 0 = the paper's objective) ties
each expert's *logits* to its role under the masking operator of the explanations and probes (a modality
replaced by its projected train-split mean): a uniqueness expert may not move when another modality is
absent, the redundancy expert may not move when any one modality is absent, and the synergy expert must
fall back to its all-absent output as soon as any modality is absent. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flmoe_jax.models import layers

Array = jax.Array

TASK_TYPES = ("multilabel", "multiclass", "binary")


def _f32(x: Array) -> Array:
  return jnp.asarray(x).astype(jnp.promote_types(jnp.asarray(x).dtype, jnp.float32))


def task_loss(logits: Array, labels: Array, task_type: str) -> Array:
  """Task loss on the mixture logits (docs/method.md 2.1).

  Args:
    logits: [B, C] logits.
    labels: [B, C] {0,1} targets for "multilabel"; [B] integer class ids for "multiclass" and
      "binary" (a binary task is a 2-class softmax).
    task_type: "multilabel" (BCE-with-logits, mean over batch and classes) or
      "multiclass"/"binary" (softmax cross-entropy, mean over the batch).

  Returns:
    Scalar loss.
  """
  logits = _f32(logits)
  if task_type == "multilabel":
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)))
  if task_type in ("multiclass", "binary"):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(int)))
  raise ValueError(f"unknown task_type {task_type!r}; expected one of {TASK_TYPES}")


def pairwise_distance(a: Array, b: Array, eps: float = 1e-7) -> Array:
  """PyTorch `pairwise_distance` (p=2): ||a - b + eps||_2 over the last axis.

  Args:
    a: [..., D].
    b: [..., D].
    eps: added to the difference (not to the norm), as PyTorch does.

  Returns:
    [...] distances.
  """
  return jnp.sqrt(jnp.sum(jnp.square(a - b + eps), axis=-1))


def triplet_loss(
  anchor: Array, positive: Array, negative: Array, *, margin: float = 1.0, eps: float = 1e-7
) -> Array:
  """`nn.TripletMarginLoss(margin, p=2, eps)` with mean reduction.

  Args:
    anchor: [..., D].
    positive: [..., D].
    negative: [..., D].
    margin: hinge margin.
    eps: distance epsilon, see `pairwise_distance`.

  Returns:
    Scalar mean of max(0, d(a, p) - d(a, n) + margin).
  """
  d_pos = pairwise_distance(_f32(anchor), _f32(positive), eps)
  d_neg = pairwise_distance(_f32(anchor), _f32(negative), eps)
  return jnp.mean(jax.nn.relu(d_pos - d_neg + margin))


def cosine_similarity(a: Array, b: Array, eps: float = 1e-12) -> Array:
  """Cosine similarity after `F.normalize(eps)` of both sides (docs/method.md 2.2).

  Args:
    a: [..., D].
    b: [..., D].
    eps: normalisation epsilon.

  Returns:
    [...] similarities.
  """
  return jnp.sum(layers.l2_normalize(_f32(a), eps) * layers.l2_normalize(_f32(b), eps), axis=-1)


def synergy_loss(clean: Array, perturbed: Array) -> Array:
  """L_syn = mean_j mean_b cos(z, z^(-j)) (raw cosine, minimum -1).

  Args:
    clean: [B, D] clean latents of the synergy expert.
    perturbed: [M, B, D] its latents with modality j perturbed.

  Returns:
    Scalar loss.
  """
  return jnp.mean(cosine_similarity(clean[None], perturbed))


def redundancy_loss(clean: Array, perturbed: Array) -> Array:
  """L_red = mean_j mean_b [1 - cos(z, z^(-j))].

  Args:
    clean: [B, D] clean latents of the redundancy expert.
    perturbed: [M, B, D] its latents with modality j perturbed.

  Returns:
    Scalar loss.
  """
  return jnp.mean(1.0 - cosine_similarity(clean[None], perturbed))


def uniqueness_losses(
  clean: Array, perturbed: Array, *, margin: float = 1.0, eps: float = 1e-7
) -> Array:
  """L_uni^(i) for all i at once (triplet: anchor clean, positive other-perturbed, negative own).

  L_uni^(i) = 1/(M-1) sum_{j != i} mean_b max(0, d(z, z^(-j)) - d(z, z^(-i)) + margin).

  Args:
    clean: [M, B, D] clean latents of the M uniqueness experts.
    perturbed: [M, M, B, D]; perturbed[i, j] = latents of expert uni_i with modality j perturbed.
    margin: triplet margin.
    eps: distance epsilon.

  Returns:
    [M] per-expert losses.
  """
  m = clean.shape[0]
  dist = pairwise_distance(_f32(clean)[:, None], _f32(perturbed), eps)  # [M(i), M(j), B]
  own = jnp.diagonal(dist, axis1=0, axis2=1).T  # [M, B]: d(z_i, z_i^(-i)), the negative
  hinge = jnp.mean(jax.nn.relu(dist - own[:, None] + margin), axis=-1)  # [M, M]
  off_diag = 1.0 - jnp.eye(m, dtype=hinge.dtype)  # j == i is not a positive
  return jnp.sum(hinge * off_diag, axis=-1) / (m - 1)


def interaction_loss(
  latents: Array, *, margin: float = 1.0, eps: float = 1e-7
) -> tuple[Array, Array]:
  """The weakly supervised interaction loss L_int (docs/method.md 2.2) for any M >= 2.

  Args:
    latents: [E, 1+M, B, D] with E = M + 2 experts in order [uni_0..uni_{M-1}, syn, red], variant 0
      clean and variant 1+j with modality j perturbed.
    margin: triplet margin of the uniqueness terms.
    eps: triplet distance epsilon.

  Returns:
    (L_int scalar = mean of the E terms, per-expert terms [E]).
  """
  e, v = latents.shape[:2]
  m = v - 1
  if m < 2 or e != m + 2:
    raise ValueError(f"latents must be [M+2, 1+M, B, D] with M >= 2, got {latents.shape}")
  clean, pert = latents[:, 0], latents[:, 1:]
  uni = uniqueness_losses(clean[:m], pert[:m], margin=margin, eps=eps)
  syn = synergy_loss(clean[m], pert[m])
  red = redundancy_loss(clean[m + 1], pert[m + 1])
  terms = jnp.concatenate([uni, syn[None], red[None]])
  return jnp.mean(terms), terms


def perturb_variants(hs: Sequence[Array], key: Array) -> list[Array]:
  """Builds the 1+M perturbation variants of the projected sequences (docs/method.md 2.2).

  Variant 0 is clean; variant 1+j replaces modality j's whole sequence (padding included) by
  i.i.d. standard-normal noise. Masks are unchanged (the experts re-zero padded positions).

  Args:
    hs: M arrays [B, T_m, H].
    key: PRNG key for the noise.

  Returns:
    M arrays [1+M, B, T_m, H].
  """
  keys = jax.random.split(key, len(hs))
  out = []
  for j, (h, k) in enumerate(zip(hs, keys, strict=True)):
    stacked = jnp.broadcast_to(h, (len(hs) + 1, *h.shape))
    out.append(stacked.at[1 + j].set(jax.random.normal(k, h.shape, h.dtype)))
  return out


def fill_variants(hs: Sequence[Array], fills: Sequence[Array]) -> list[Array]:
  """The M+1 "modality absent" variants used by the role-consistency loss.

  Variant j (< M) replaces modality j's whole sequence by its fill vector; variant M replaces every
  modality. Masks are unchanged, as for the noise perturbations.

  Args:
    hs: M arrays [B, T_m, H] (projected features).
    fills: M arrays [H] (the projected train-split means; see `explain.masking.fill_vectors`).

  Returns:
    M arrays [M+1, B, T_m, H].
  """
  m = len(hs)
  out = []
  for j, (h, f) in enumerate(zip(hs, fills, strict=True)):
    absent = jnp.broadcast_to(f.astype(h.dtype), h.shape)
    out.append(jnp.stack([absent if (v == j or v == m) else h for v in range(m + 1)]))
  return out


def role_consistency_losses(clean: Array, absent: Array) -> Array:
  """Per-expert role-consistency terms on logits (beyond the paper; see the module docstring).

  With l_e the clean logits of expert e, l_e^(-j) its logits with modality j absent (mean fill) and
  l_e^(-all) with every modality absent, and ||.||^2 the mean squared difference over classes:
    uni_i: mean_{j != i} mean_b ||l - l^(-j)||^2   (reads modality i only);
    syn:   mean_j mean_b ||l^(-j) - l^(-all)||^2    (says nothing unless every modality is present);
    red:   mean_j mean_b ||l - l^(-j)||^2           (any one modality suffices).

  Args:
    clean: [E, B, C] clean logits, experts [uni_0..uni_{M-1}, syn, red].
    absent: [E, M+1, B, C]; absent[:, j] with modality j filled (j < M), absent[:, M] all filled.

  Returns:
    [E] per-expert terms.
  """
  clean, absent = _f32(clean), _f32(absent)
  m = absent.shape[1] - 1
  single = absent[:, :m]  # [E, M, B, C]
  keep = jnp.mean((clean[:, None] - single) ** 2, axis=(-2, -1))  # [E, M]
  collapse = jnp.mean((single - absent[:, m : m + 1]) ** 2, axis=(-2, -1))  # [E, M]
  other = 1.0 - jnp.eye(m, dtype=keep.dtype)
  uni = jnp.sum(keep[:m] * other, axis=-1) / (m - 1)
  return jnp.concatenate([uni, jnp.mean(collapse[m : m + 1], -1), jnp.mean(keep[m + 1 :], -1)])


def uniqueness_decorrelation_loss(
  expert_logits: Array, num_modalities: int, eps: float = 1e-6
) -> Array:
  """Squared batch covariance between the uniqueness experts' logits, in units of the experts' variance.

  Evidence a uniqueness expert reads from its modality that the other modality also carries (a
  redundant copy) makes two uniqueness experts' outputs co-vary over the data; evidence unique to each
  modality does not. Driving the covariance to zero leaves shared evidence to the redundancy expert.
  The unit is the mean variance of all experts' logits (not trained through), so the term is
  invariant to the overall logit scale, and near-constant uniqueness experts next to a strong
  expert pay almost nothing (a correlation would amplify their noise: in the pure `synergy` setting
  it cost the synergy expert its XOR; docs/ground_truth.md).

  Args:
    expert_logits: [B, E, C] clean expert logits, uniqueness experts first (E >= M).
    num_modalities: M.
    eps: variance floor.

  Returns:
    Scalar >= 0, the mean over uniqueness-expert pairs and classes of (cov_ij / mean_e var_e)^2;
    0 for M = 1.
  """
  m = num_modalities
  if m < 2:
    return jnp.zeros((), jnp.float32)
  z = _f32(expert_logits)  # [B, E, C]
  z = z - jnp.mean(z, axis=0)
  unit = jax.lax.stop_gradient(jnp.mean(z**2, axis=(0, 1)))  # [C] mean expert variance
  cov = jnp.einsum("bic,bjc->ijc", z[:, :m], z[:, :m]) / z.shape[0]  # [M, M, C]
  iu, ju = jnp.triu_indices(m, 1)
  return jnp.mean((cov[iu, ju] / (unit + eps)) ** 2)


def missing_modality_loss(
  absent_logits: Array, absent_weights: Array, labels: Array, task_type: str
) -> Array:
  """Task loss of the mixture with one modality absent, averaged over the modalities.

  With w^(-j) the gate weights and l_e^(-j) the expert logits on the input with modality j mean-filled,
  the term is mean_j L_task(sum_e w_e^(-j) l_e^(-j), y). It asks the model to stay calibrated when a
  modality is missing. On a label carried by two copies of one latent (redundancy) that separates the
  roles the clean data cannot: two uniqueness experts that each add the evidence of their own copy
  count it twice when both are present and once when one is, while the redundancy expert gives the
  same evidence either way (docs/ground_truth.md).

  Args:
    absent_logits: [E, M+1, B, C] (variant j < M: modality j absent; variant M: all absent, unused).
    absent_weights: [M+1, B, E] gate weights on the same variants.
    labels: see `task_loss`.
    task_type: see `task_loss`.

  Returns:
    Scalar.
  """
  m = absent_logits.shape[1] - 1
  logits = _f32(absent_logits[:, :m])
  if logits.shape[0] == m + 2:
    # The synergy expert (index M) has nothing to say with a modality missing; its output there is
    # the role loss's business, so it enters this mixture as a constant.
    logits = logits.at[m].set(jax.lax.stop_gradient(logits[m]))
  mixed = jnp.einsum("jbe,ejbc->jbc", _f32(absent_weights[:m]), logits)  # [M, B, C]
  # Every task loss is a mean over the batch, so one call on the M variants stacked along the batch
  # is the mean over modalities.
  labels = jnp.broadcast_to(labels, (m, *labels.shape)).reshape(-1, *labels.shape[1:])
  return task_loss(mixed.reshape(-1, mixed.shape[-1]), labels, task_type)


def redundancy_alone_loss(absent_logits: Array, labels: Array, task_type: str) -> Array:
  """Task loss of the redundancy expert *alone* with one modality absent, averaged over the modalities.

  With l_red^(-j) the redundancy expert's logits on the input with modality j mean-filled, the term is
  mean_j L_task(l_red^(-j), y). Together with the role-consistency term (l_red = l_red^(-j) for every
  j) it asks the redundancy expert for what every single modality can tell about the label: the
  evidence they share. Unlike `missing_modality_loss` it does not go through the gate, so a gate
  that settled on a uniqueness expert cannot answer it for the redundancy expert: on a store whose
  label two copies carry, the mixture needs no redundancy expert (either uniqueness expert
  suffices), and without this term the redundancy expert can stay constant, which meets its role
  term trivially (docs/ground_truth.md).

  Args:
    absent_logits: [E, M+1, B, C], experts [uni_0..uni_{M-1}, syn, red] (variant j < M: modality j
      absent; variant M: all absent, unused).
    labels: see `task_loss`.
    task_type: see `task_loss`.

  Returns:
    Scalar.
  """
  m = absent_logits.shape[1] - 1
  logits = _f32(absent_logits[-1, :m])  # [M, B, C], the redundancy expert is last
  labels = jnp.broadcast_to(labels, (m, *labels.shape)).reshape(-1, *labels.shape[1:])
  return task_loss(logits.reshape(-1, logits.shape[-1]), labels, task_type)


def synergy_residual_loss(
  logits: Array, expert_logits: Array, weights: Array, labels: Array, task_type: str
) -> Array:
  """Task loss of the synergy expert at full weight beside the other experts' fixed contributions.

  With z the mixture's logits, w_syn the synergy expert's gate weight and l_syn its logits, the term is
  L_task(sg(z - w_syn l_syn) + l_syn, y): the synergy expert is asked for what the rest of the
  mixture does not yet give, and its gradient is not scaled by its gate weight. Through the mixture
  alone a gate that has turned away from a synergy expert still on the plateau of an XOR leaves it
  almost no gradient (docs/ground_truth.md 5.13). The role term keeps it to what needs every
  modality.

  Args:
    logits: [B, C] mixture logits.
    expert_logits: [B, E, C], experts [uni_0..uni_{M-1}, syn, red].
    weights: [B, E] gate weights.
    labels: see `task_loss`.
    task_type: see `task_loss`.

  Returns:
    Scalar.
  """
  syn = _f32(expert_logits[:, -2])  # [B, C]
  rest = _f32(logits) - _f32(weights[:, -2:-1]) * syn
  return task_loss(jax.lax.stop_gradient(rest) + syn, labels, task_type)


def fl_i2moe_loss(
  out: Any,
  labels: Array,
  *,
  task_type: str,
  lambda_int: float | Array,
  lambda_role: float | Array = 0.0,
  lambda_missing: float | Array = 0.0,
  lambda_decor: float | Array = 0.0,
  lambda_red_alone: float | Array = 0.0,
  lambda_syn_residual: float | Array = 0.0,
) -> tuple[Array, dict[str, Array]]:
  """L = L_task + lambda_int L_int [+ lambda_role L_role + lambda_missing L_missing + ...] (method 2.2).

  Args:
    out: a `TrainOutput` (logits [B, C], latents [E, V, B, D], absent_logits [E, M+1, B, C] or
      None). With a single variant (V = 1, the dense baseline) the interaction term is zero; without
      `absent_logits` the role term is zero.
    labels: see `task_loss`.
    task_type: see `task_loss`.
    lambda_int: interaction-loss weight (may be traced).
    lambda_role: role-consistency weight (beyond the paper; 0 = the paper's objective).
    lambda_missing: missing-modality task weight (beyond the paper; 0 = off). Needs
      `absent_weights` as well.
    lambda_decor: uniqueness-decorrelation weight (beyond the paper; 0 = off).
    lambda_red_alone: weight of the redundancy expert's own task loss with one modality absent
      (beyond the paper; 0 = off). Needs `absent_logits`.
    lambda_syn_residual: weight of the synergy expert's task loss at full weight beside the other
      experts (`synergy_residual_loss`; beyond the paper; 0 = off).

  Returns:
    (total scalar, aux dict with "task", "interaction", "role", "missing", "decor", "red_alone",
    "syn_residual" scalars and "int_terms", "role_terms" [E]).
  """
  task = task_loss(out.logits, labels, task_type)
  e, v = out.latents.shape[:2]
  if v > 1:
    inter, terms = interaction_loss(out.latents)
  else:
    inter, terms = jnp.zeros((), task.dtype), jnp.zeros((e,), task.dtype)
  if out.absent_logits is not None:
    role_terms = role_consistency_losses(jnp.moveaxis(out.expert_logits, 1, 0), out.absent_logits)
  else:
    role_terms = jnp.zeros((e,), task.dtype)
  role = jnp.mean(role_terms)
  if out.absent_weights is not None:
    missing = missing_modality_loss(out.absent_logits, out.absent_weights, labels, task_type)
  else:
    missing = jnp.zeros((), task.dtype)
  if out.absent_logits is not None and e > 2:
    red_alone = redundancy_alone_loss(out.absent_logits, labels, task_type)
  else:
    red_alone = jnp.zeros((), task.dtype)
  if e > 2:
    syn_residual = synergy_residual_loss(
      out.logits, out.expert_logits, out.weights, labels, task_type
    )
  else:
    syn_residual = jnp.zeros((), task.dtype)
  # FL-I2MoE has M + 2 experts (uniqueness first); the dense baseline's one expert has no pairs.
  decor = uniqueness_decorrelation_loss(out.expert_logits, max(e - 2, 1))
  total = task + lambda_int * inter + lambda_role * role + lambda_missing * missing
  total = total + lambda_decor * decor + lambda_red_alone * red_alone
  total = total + lambda_syn_residual * syn_residual
  return total, {
    "task": task,
    "interaction": inter,
    "int_terms": terms,
    "role": role,
    "role_terms": role_terms,
    "missing": missing,
    "decor": decor,
    "red_alone": red_alone,
    "syn_residual": syn_residual,
  }
