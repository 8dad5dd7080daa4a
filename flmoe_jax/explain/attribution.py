"""Per-token attributions of FL-I2MoE (and the dense baseline), per expert and for the mixture.

Three methods (docs/method.md 4.1), all on the *projected* token/patch features hs (the experts' inputs):

* `attn`: attention rollout. Per expert, head-averaged attention A^(l) [L, L] of every layer,
  R = prod_l rownorm(A^(l) + I) (later layer on the left), importance s_t = mean over query rows of
  R[:, t]. Mixture: sum_e w_e * s^(e).
* `attnxgrad` (default): Chefer-style rollout of relevance M^(l) = mean_heads(relu(A) * relu(dS/dA)).
  Expert-wise: S_e = sum_b target logit of expert e, only expert e's attentions. Mixture: S = sum_b
  target logit of the mixture, back-propagated to every expert's attentions, experts summed without
  w (w is already inside dS/dA).
* `ig`: integrated gradients of the target logit w.r.t. hs, right-endpoint Riemann sum over
  `ig_steps` steps from a zero or mean (train-split mean, projected) baseline. Importance =
  mean over H of |(x - x0) * avg_grad|; the signed per-token sum over H is kept too (completeness:
  its sum over all tokens is f(x) - f(x0) up to the Riemann error).

Maps are then min-max normalised per modality and sample over the *candidate* tokens only
(`masking.candidate_masks`: valid tokens minus the special first token of `tokens` modalities);
non-candidates are 0.

Everything runs in one jitted call per (model structure, batch shape, options): the batch is one
array axis (no per-sample loop), experts are the model's stacked axis, and IG steps run in chunks of
`steps_per_call` inside the jitted function (`lax.map` over chunks), the memory knob shared with
`faithfulness`.

Why d(score)/d(attention) is cheap: the model adds `attn_delta` to the post-softmax attention, so
the gradient w.r.t. a zero delta is dS/dA. The gate reads only hs, never the attentions, so
dS_mixture/dA_e = w_e * dS_e/dA_e per sample: ONE backward pass gives every expert-wise gradient and
the mixture gradient.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from flmoe_jax import choices
from flmoe_jax.errors import ExplainError
from flmoe_jax.explain import masking, targets

Array = jax.Array
METHODS = choices.ATTRIBUTION_METHODS
IG_BASELINES = choices.IG_BASELINES
MIXTURE = "mixture"
KINDS = ("tokens", "patches")
_EPS = 1e-8  # min-max denominator guard (the reference's)


# --------------------------------------------------------------------------------------------------
# Result type.
# --------------------------------------------------------------------------------------------------


@struct.dataclass
class Attribution:
  """Token importance maps of one batch, for one or more *views* (experts and/or the mixture).

  A pytree (arrays are leaves; names and options are static), so it can cross `jax.jit`.

  Attributes:
    maps: per modality, float [B, V, T_m]: min-max normalised to [0, 1] over the candidate tokens,
      0 elsewhere. V = len(views).
    raw: per modality, float [B, V, T_m]: the unnormalised non-negative importance (rollout column
      mean, or mean |IG|); comparable across modalities of one view (used for modality mass shares).
    signed: IG only, per modality float [B, V, T_m]: signed attributions summed over H (every
      token, candidates or not); None for the attention methods.
    candidates: per modality, bool [B, T_m] (valid tokens minus the special first text token).
    target: float [B, C] 0/1 target mask (docs/method.md 4.3).
    logits: float [B, C] clean mixture logits.
    expert_logits: float [B, E, C] clean expert logits.
    weights: float [B, E] expert weights (ones [B, 1] for the dense baseline).
    views: V names: expert names (`model.expert_names`) and/or `mixture`.
    view_experts: V entries: the expert index of each view, or -1 for the mixture.
    method: `attnxgrad`, `attn` or `ig`.
    kinds: per modality `tokens` / `patches`.
  """

  maps: tuple[Array, ...]
  raw: tuple[Array, ...]
  signed: tuple[Array, ...] | None
  candidates: tuple[Array, ...]
  target: Array
  logits: Array
  expert_logits: Array
  weights: Array
  views: tuple[str, ...] = struct.field(pytree_node=False, default=())
  view_experts: tuple[int, ...] = struct.field(pytree_node=False, default=())
  method: str = struct.field(pytree_node=False, default="attnxgrad")
  kinds: tuple[str, ...] = struct.field(pytree_node=False, default=())

  def index(self, view: str | int) -> int:
    """Position of a view (by name, or by expert index) in the V axis."""
    if isinstance(view, str):
      if view not in self.views:
        raise ExplainError(f"no view {view!r}; this attribution has {list(self.views)}")
      return self.views.index(view)
    if view not in self.view_experts:
      raise ExplainError(f"expert {view} is not among the views {list(self.views)}")
    return self.view_experts.index(view)

  def view(self, view: str | int, *, normalised: bool = True) -> tuple[Array, ...]:
    """The maps of one view: per modality [B, T_m]."""
    i = self.index(view)
    src = self.maps if normalised else self.raw
    return tuple(m[:, i] for m in src)


# --------------------------------------------------------------------------------------------------
# Pure building blocks (exported: they are what the tests check against closed forms).
# --------------------------------------------------------------------------------------------------


def row_normalise(a: Array) -> Array:
  """Rows of a [..., L, L] non-negative matrix divided by their sums (zero rows stay zero)."""
  s = a.sum(-1, keepdims=True)
  return a / jnp.where(s > 0, s, 1.0)


def rollout(relevance: Array) -> Array:
  """Rollout R = prod_l rownorm(M^(l) + I), the later layer multiplied on the left.

  Args:
    relevance: [layers, ..., L, L] non-negative per-layer relevance (head-averaged attention, or
      attention x gradient).

  Returns:
    [..., L, L]; every row sums to 1.
  """
  length = relevance.shape[-1]
  eye = jnp.eye(length, dtype=relevance.dtype)

  def step(r, m):
    return jnp.matmul(row_normalise(m + eye), r), None

  r0 = jnp.broadcast_to(eye, relevance.shape[1:])
  r, _ = jax.lax.scan(step, r0, relevance)
  return r


def token_importance(r: Array, query_mask: Array) -> Array:
  """s_t = mean over the valid query rows q of R[q, t].

  The reference averages over every row, padded queries included; padded queries never influence
  the output (their keys are masked out of every real query's attention), so we average over real
  queries only (docs/method.md 7.12 calls the reference's choice a minor bias).

  Args:
    r: [..., L, L] rollout.
    query_mask: bool [..., L], True = real token.

  Returns:
    [..., L].
  """
  qm = query_mask.astype(r.dtype)
  return jnp.einsum("...qt,...q->...t", r, qm) / jnp.maximum(qm.sum(-1, keepdims=True), 1.0)


def attention_relevance(attn: Array, grad: Array | None = None) -> Array:
  """Per-layer relevance: mean over heads of A (rollout) or of relu(A) * relu(dS/dA) (attnxgrad).

  Args:
    attn: [..., heads, L, L] post-softmax attention.
    grad: same shape, dS/dA, or None for plain attention rollout.

  Returns:
    [..., L, L].
  """
  if grad is None:
    return attn.mean(axis=-3)
  return (jax.nn.relu(attn) * jax.nn.relu(grad)).mean(axis=-3)


def minmax_normalise(s: Array, candidates: Array) -> Array:
  """Min-max normalisation over the candidate tokens; non-candidates are set to 0.

  Args:
    s: [..., T] importances.
    candidates: bool [..., T].

  Returns:
    [..., T] in [0, 1] on candidates (a constant map becomes all 0).
  """
  lo = jnp.min(jnp.where(candidates, s, jnp.inf), axis=-1, keepdims=True)
  hi = jnp.max(jnp.where(candidates, s, -jnp.inf), axis=-1, keepdims=True)
  any_c = jnp.any(candidates, axis=-1, keepdims=True)
  lo, hi = jnp.where(any_c, lo, 0.0), jnp.where(any_c, hi, 0.0)
  return jnp.where(candidates, (s - lo) / (hi - lo + _EPS), 0.0)


def chunked_map(fn, xs, chunk: int | None):
  """`fn` over the leading axis of `xs` in chunks of `chunk` (one compiled body, `lax.map`).

  `fn` receives a pytree whose leaves have a leading axis of size `chunk` and must return leaves
  with the same leading axis. The chunk is shrunk to ceil(N / calls) for the same number of calls,
  and the leading axis is padded by repeating the first row (the padded outputs are dropped), so
  `fn` never sees a ragged chunk. chunk=None (or >= N) runs one call.

  Args:
    fn: chunk -> outputs, both with a leading chunk axis.
    xs: pytree of [N, ...] arrays.
    chunk: rows per call, or None.

  Returns:
    pytree of [N, ...] outputs.
  """
  n = jax.tree.leaves(xs)[0].shape[0]
  if chunk is None or chunk >= n:
    return fn(xs)
  n_chunks = -(-n // chunk)
  chunk = -(-n // n_chunks)  # the same number of calls, with the least padding
  pad = n_chunks * chunk - n

  def pad_split(a):
    if pad:
      a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad, *a.shape[1:]))])
    return a.reshape(n_chunks, chunk, *a.shape[1:])

  out = jax.lax.map(fn, jax.tree.map(pad_split, xs))
  return jax.tree.map(lambda a: a.reshape(n_chunks * chunk, *a.shape[2:])[:n], out)


def chunked_sum(fn, xs: Array, chunk: int | None):
  """sum_i fn(xs[i]) over the leading axis, in chunks of `chunk` (a `lax.scan` over chunks).

  Args:
    fn: (chunk of xs [n, ...], valid bool [n]) -> pytree summed over the chunk's valid rows.
    xs: [N, ...].
    chunk: rows per call, or None (one call).

  Returns:
    The pytree sum.
  """
  n = xs.shape[0]
  chunk = n if chunk is None else min(int(chunk), n)
  n_chunks = -(-n // chunk)
  chunk = -(-n // n_chunks)  # the same number of calls, with the least padding
  pad = n_chunks * chunk - n
  valid = jnp.arange(n_chunks * chunk) < n
  if pad:
    xs = jnp.concatenate([xs, jnp.broadcast_to(xs[:1], (pad, *xs.shape[1:]))])
  xs = xs.reshape(n_chunks, chunk, *xs.shape[1:])
  valid = valid.reshape(n_chunks, chunk)
  if n_chunks == 1:
    return fn(xs[0], valid[0])
  first = fn(xs[0], valid[0])

  def step(acc, inp):
    return jax.tree.map(jnp.add, acc, fn(*inp)), None

  total, _ = jax.lax.scan(step, first, (xs[1:], valid[1:]))
  return total


# --------------------------------------------------------------------------------------------------
# Input handling (shared with faithfulness).
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Inputs:
  hs: list[Array]
  masks: list[Array]
  labels: Array | None
  weight: np.ndarray | None


@nnx.jit
def _project(model, xs):
  return model.project([jnp.asarray(x, jnp.float32) for x in xs])


def resolve_inputs(model, batch) -> _Inputs:
  """Projected features, masks, labels and row weights from a store batch or (hs, masks).

  Args:
    model: FLI2MoE or DenseTransformer.
    batch: a `FeatureStore.batches` dict (`x` raw features, `mask`, optional `label`, `weight`) or
      a pair (hs, masks) of projected features M x [B, T_m, H] and masks M x [B, T_m].

  Returns:
    The resolved inputs.
  """
  m = model.num_modalities
  if isinstance(batch, Mapping):
    if "x" not in batch or "mask" not in batch:
      raise ExplainError("a batch dict needs 'x' (raw features per modality) and 'mask'")
    xs, masks = list(batch["x"]), list(batch["mask"])
    if len(xs) != m:
      raise ExplainError(f"batch has {len(xs)} modalities, the model expects {m}")
    for x, d in zip(xs, model.input_dims, strict=True):
      if np.ndim(x) != 3 or x.shape[-1] != d:
        raise ExplainError(f"raw features of shape {np.shape(x)} do not match input dim {d}")
    hs = list(_project(model, [jnp.asarray(x) for x in xs]))
    labels = batch.get("label")
    weight = batch.get("weight")
  elif isinstance(batch, (tuple, list)) and len(batch) == 2:
    hs, masks = [jnp.asarray(h) for h in batch[0]], list(batch[1])
    labels = weight = None
    if len(hs) != m:
      raise ExplainError(f"got {len(hs)} modalities of projected features, the model expects {m}")
    for h in hs:
      if h.ndim != 3 or h.shape[-1] != model.hidden_dim:
        raise ExplainError(
          f"projected features must be [B, T, {model.hidden_dim}], got {tuple(h.shape)}"
        )
  else:
    raise ExplainError("batch must be a store batch dict or a pair (hs, masks)")
  if len(masks) != m:
    raise ExplainError(f"got {len(masks)} masks for {m} modalities")
  masks = [jnp.asarray(mk, bool) for mk in masks]
  for h, mk in zip(hs, masks, strict=True):
    if tuple(mk.shape) != tuple(h.shape[:2]):
      raise ExplainError(f"mask shape {tuple(mk.shape)} does not match features {tuple(h.shape)}")
  b = {int(h.shape[0]) for h in hs}
  if len(b) != 1:
    raise ExplainError(f"modalities have different batch sizes {sorted(b)}")
  return _Inputs(
    hs=hs,
    masks=masks,
    labels=None if labels is None else jnp.asarray(labels),
    weight=None if weight is None else np.asarray(weight),
  )


def resolve_kinds(kinds, num_modalities: int) -> tuple[str, ...]:
  """Modality kinds from a sequence of `tokens`/`patches`, a FeatureStore or a LoadedRun."""
  if kinds is None:
    raise ExplainError(
      "pass kinds= (per modality 'tokens' or 'patches', or the FeatureStore): the special first "
      "text token must be excluded from the candidates"
    )
  if hasattr(kinds, "modalities"):  # FeatureStore
    kinds = [m.kind for m in kinds.modalities]
  elif hasattr(kinds, "kinds"):  # LoadedRun
    kinds = kinds.kinds
  kinds = tuple(str(k) for k in kinds)
  if len(kinds) != num_modalities or any(k not in KINDS for k in kinds):
    raise ExplainError(f"kinds must be {num_modalities} entries from {KINDS}, got {list(kinds)}")
  return kinds


def resolve_task_type(task_type: str | None, labels) -> str:
  """The task type, or inferred from the label layout ([B, C] -> multilabel, [B] -> multiclass)."""
  if task_type is not None:
    if task_type not in ("multilabel", "multiclass", "binary"):
      raise ExplainError(f"task_type {task_type!r} not in multilabel/multiclass/binary")
    return task_type
  if labels is None:
    raise ExplainError("pass task_type= ('multilabel', 'multiclass' or 'binary')")
  return "multilabel" if np.ndim(labels) == 2 else "multiclass"


def resolve_views(model, expert) -> tuple[tuple[str, ...], tuple[int, ...]]:
  """View names and expert indices (-1 = mixture) from `expert`.

  Args:
    model: the model (for `num_experts` and `expert_names`).
    expert: None (every expert, then the mixture), an expert index, `mixture`, an expert name, or
      a sequence of those.

  Returns:
    (names, indices).
  """
  e = model.num_experts
  if expert is None:
    items = list(range(e)) + [MIXTURE]
  elif isinstance(expert, (str, int, np.integer)):
    items = [expert]
  else:
    items = list(expert)
  names, idx = [], []
  for it in items:
    if isinstance(it, str) and it != MIXTURE:
      if it not in model.expert_names:
        raise ExplainError(f"unknown expert {it!r}; experts are {list(model.expert_names)}")
      it = model.expert_names.index(it)
    if isinstance(it, str):
      names.append(MIXTURE)
      idx.append(-1)
    else:
      if not 0 <= int(it) < e:
        raise ExplainError(f"expert index {it} out of range [0, {e})")
      names.append(model.expert_names[int(it)])
      idx.append(int(it))
  if len(set(idx)) != len(idx):
    raise ExplainError(f"repeated views {names}")
  return tuple(names), tuple(idx)


def resolve_target(target, labels, num_classes: int):
  """(source, given array) from target = 'pred' | 'true' | [B, C] array."""
  if isinstance(target, str):
    if target not in targets.TARGET_SOURCES:
      raise ExplainError(f"target {target!r} not in {targets.TARGET_SOURCES} (or a [B, C] mask)")
    if target == "true" and labels is None:
      raise ExplainError("target='true' needs labels (a store batch with 'label')")
    return target, None
  t = jnp.asarray(target, jnp.float32)
  if t.ndim != 2 or t.shape[-1] != num_classes:
    raise ExplainError(f"a target array must be [B, {num_classes}], got {tuple(t.shape)}")
  return "given", t


def _target(logits, labels, given, *, task_type, source):
  if source == "given":
    return given
  return targets.target_mask(
    jax.lax.stop_gradient(logits).astype(jnp.float32), task_type, source=source, labels=labels
  )


def _split(s: Array, lengths: Sequence[int]) -> list[Array]:
  """[..., L] -> per modality [..., T_m]."""
  return jnp.split(s, np.cumsum(lengths)[:-1].tolist(), axis=-1)


# --------------------------------------------------------------------------------------------------
# The jitted core.
# --------------------------------------------------------------------------------------------------


def _attnxgrad(model, hs, masks, labels, given, *, view_experts, task_type, source):
  b = hs[0].shape[0]
  length = sum(h.shape[-2] for h in hs)
  shape = (model.num_experts, model.num_layers, b, model.num_heads, length, length)
  zero = jnp.zeros(shape, hs[0].dtype)

  def score(delta):
    out = model.forward_projected(hs, masks, attn_delta=delta, return_attn=True)
    t = _target(out.logits, labels, given, task_type=task_type, source=source)
    # [B, E] expert-wise target logits; their sum's gradient w.r.t. A_e is dS_e/dA_e, since expert
    # e's logits depend on A_e only.
    s = targets.target_score(out.expert_logits, t[:, None, :], task_type, score="logit")
    return s.sum(), (out, t)

  grad, (out, t) = jax.grad(score, has_aux=True)(zero)
  rel = attention_relevance(out.attn, grad)  # [E, layers, B, L, L]
  qmask = jnp.concatenate(masks, axis=-1)
  cols = []
  for e in view_experts:
    if e >= 0:
      cols.append(token_importance(rollout(rel[e]), qmask))
    else:
      # Mixture: relu(w_e * g) = w_e * relu(g) (w > 0), so the mixture relevance of expert e is
      # w_e * M_e; each expert's rollout is taken, then experts are summed (no w outside).
      w = out.weights.astype(rel.dtype).T[:, None, :, None, None]  # [E, 1, B, 1, 1]
      per = jax.vmap(rollout)(rel * w)  # [E, B, L, L]
      cols.append(token_importance(per, qmask[None]).sum(0))
  return jnp.stack(cols, axis=1), None, out, t


def _attn(model, hs, masks, labels, given, *, view_experts, task_type, source):
  out = model.forward_projected(hs, masks, return_attn=True)
  t = _target(out.logits, labels, given, task_type=task_type, source=source)
  qmask = jnp.concatenate(masks, axis=-1)
  per = token_importance(jax.vmap(rollout)(attention_relevance(out.attn)), qmask[None])  # [E, B, L]
  cols = []
  for e in view_experts:
    if e >= 0:
      cols.append(per[e])
    else:
      cols.append(jnp.einsum("be,ebl->bl", out.weights.astype(per.dtype), per))
  return jnp.stack(cols, axis=1), None, out, t


def _ig(model, hs, masks, labels, given, base, *, view_experts, task_type, source, steps, chunk):
  out = model.forward_projected(hs, masks)
  t = _target(out.logits, labels, given, task_type=task_type, source=source)
  deltas = [h - b for h, b in zip(hs, base, strict=True)]
  v = len(view_experts)

  def scores(xs):  # M x [n, B, T, H] -> [n, B, V]
    n, b = xs[0].shape[:2]
    # Steps x batch as ONE leading axis: plain [N, T, H] matmuls are faster than two batch dims.
    flat = [x.reshape(n * b, *x.shape[2:]) for x in xs]
    ms = [jnp.broadcast_to(m, x.shape[:-1]).reshape(n * b, -1) for m, x in zip(masks, xs)]
    o = model.forward_projected(flat, ms)
    tg = jnp.broadcast_to(t, (n, *t.shape)).reshape(n * b, -1)
    cols = []
    for e in view_experts:
      lg = o.logits if e < 0 else o.expert_logits[..., e, :]
      cols.append(targets.target_score(lg, tg, task_type, score="logit"))
    return jnp.stack(cols, axis=-1).reshape(n, b, -1)

  def body(alphas, valid):  # [n], [n] -> M x [V, B, T, H], summed over the chunk's valid steps
    xs = [b + alphas[:, None, None, None].astype(d.dtype) * d for b, d in zip(base, deltas)]
    s, vjp = jax.vjp(scores, xs)
    # One backward pass per view, vmapped over one-hot cotangents; padded steps get weight 0.
    w = valid.astype(s.dtype)[:, None, None]

    def one(i):
      ct = jnp.broadcast_to(w * jax.nn.one_hot(i, v, dtype=s.dtype), s.shape)
      return [g.sum(0) for g in vjp(ct)[0]]

    return jax.vmap(one)(jnp.arange(v))

  total = chunked_sum(body, (jnp.arange(steps, dtype=jnp.float32) + 1.0) / steps, chunk)
  avg = [g / steps for g in total]  # right Riemann sum: alpha = s/steps, s = 1..steps
  # A feature that does not move along the path gets exactly 0 (also where its gradient is NaN, e.g.
  # the gate's L2 normalisation of an all-zero pooled modality has an infinite derivative).
  contrib = [jnp.where(d[None] == 0, 0.0, d[None] * g) for d, g in zip(deltas, avg)]  # [V, B, T, H]
  raw = jnp.concatenate([jnp.abs(c).mean(-1) for c in contrib], axis=-1)  # [V, B, L]
  signed = jnp.concatenate([c.sum(-1) for c in contrib], axis=-1)
  return jnp.moveaxis(raw, 0, 1), jnp.moveaxis(signed, 0, 1), out, t


@dataclasses.dataclass(frozen=True)
class _MapPlan:
  """What `_attribute_jit` computes, all static (hashable): one compile per plan and shape.

  Attributes:
    method: `attnxgrad`, `attn` or `ig`.
    view_experts: the expert index of each view (-1 = the mixture).
    kinds: per modality `tokens` | `patches`.
    task_type: multilabel | multiclass | binary.
    source: where the target comes from (`pred`, `true` or `given`).
    ig_steps: integrated-gradients path steps.
    steps_per_call: path steps per call (the memory knob); None = all at once.
  """

  method: str
  view_experts: tuple[int, ...]
  kinds: tuple[str, ...]
  task_type: str
  source: str
  ig_steps: int
  steps_per_call: int | None


@functools.partial(nnx.jit, static_argnames=("plan",))
def _attribute_jit(model, hs, masks, labels, given, base, *, plan: _MapPlan):
  """Maps of every view of `plan` on one batch, with the outputs and target (see `attribute`)."""
  lengths = [h.shape[-2] for h in hs]
  kw = dict(view_experts=plan.view_experts, task_type=plan.task_type, source=plan.source)
  if plan.method == "attnxgrad":
    raw, signed, out, t = _attnxgrad(model, hs, masks, labels, given, **kw)
  elif plan.method == "attn":
    raw, signed, out, t = _attn(model, hs, masks, labels, given, **kw)
  else:
    steps, chunk = plan.ig_steps, plan.steps_per_call
    raw, signed, out, t = _ig(model, hs, masks, labels, given, base, steps=steps, chunk=chunk, **kw)
  cand = masking.candidate_masks(masks, plan.kinds)
  raw_m = _split(raw.astype(jnp.float32), lengths)  # M x [B, V, T_m]
  maps = [minmax_normalise(r, c[:, None, :]) for r, c in zip(raw_m, cand)]
  return {
    "maps": tuple(maps),
    "raw": tuple(raw_m),
    "signed": None if signed is None else tuple(_split(signed.astype(jnp.float32), lengths)),
    "candidates": tuple(cand),
    "target": t,
    "logits": out.logits.astype(jnp.float32),
    "expert_logits": out.expert_logits.astype(jnp.float32),
    "weights": out.weights.astype(jnp.float32),
  }


# --------------------------------------------------------------------------------------------------
# Public entry point.
# --------------------------------------------------------------------------------------------------


def attribute(
  model,
  batch,
  *,
  method: str = "attnxgrad",
  expert: None | int | str | Sequence[int | str] = None,
  target: str | Array = "pred",
  kinds=None,
  task_type: str | None = None,
  steps_per_call: int | None = 16,
  ig_steps: int = 16,
  ig_baseline: str = "zero",
  means: Sequence[np.ndarray] | None = None,
) -> Attribution:
  """Per-token importance maps of a batch, per expert and/or for the mixture (docs/method.md 4.1).

  Example:
    >>> run = flmoe_jax.runs.load_run("runs/syn_fl")
    >>> batch = next(run.store.batches("val", 32))
    >>> attr = attribute(run.model, batch, kinds=run.store, task_type=run.store.task.type)
    >>> text_map, image_map = attr.view("syn")  # [B, T_text], [B, T_image]

  Args:
    model: an FLI2MoE or DenseTransformer, used in eval mode (no dropout).
    batch: a `FeatureStore.batches` dict (raw features are projected with the model) or a pair
      (hs, masks): projected features M x [B, T_m, H] and bool masks M x [B, T_m].
    method: `attnxgrad` (default), `attn` (attention rollout) or `ig` (integrated gradients).
    expert: which maps: None = every expert then the mixture; an expert index or name; `mixture`;
      or a sequence of those.
    target: `pred` (the model's own prediction), `true` (labels from the batch) or a float [B, C]
      0/1 mask (docs/method.md 4.3).
    kinds: per modality `tokens`/`patches` (or a FeatureStore / LoadedRun): the first token of a
      `tokens` modality is a special token and never a candidate.
    task_type: `multilabel`, `multiclass` or `binary`; inferred from the batch labels if None.
    steps_per_call: memory knob shared by every method: model passes per vmapped call (IG steps
      here; masked variants in `faithfulness`). None = all at once. The attention methods need a
      single pass and ignore it.
    ig_steps: IG Riemann steps (the reference uses 16).
    ig_baseline: `zero` (the reference) or `mean` (the projected train-split mean; needs `means`).
    means: per modality raw train-split means [D_m] (`FeatureStore.means()`), for the mean
      baseline.

  Returns:
    An `Attribution` with maps [B, V, T_m] per modality.
  """
  if method not in METHODS:
    raise ExplainError(f"method {method!r} not in {METHODS}")
  if steps_per_call is not None and int(steps_per_call) < 1:
    raise ExplainError(f"steps_per_call must be >= 1 or None, got {steps_per_call}")
  if int(ig_steps) < 1:
    raise ExplainError(f"ig_steps must be >= 1, got {ig_steps}")
  if ig_baseline not in IG_BASELINES:
    raise ExplainError(f"ig_baseline {ig_baseline!r} not in {IG_BASELINES}")
  inp = resolve_inputs(model, batch)
  kinds = resolve_kinds(kinds, model.num_modalities)
  task_type = resolve_task_type(task_type, inp.labels)
  names, view_experts = resolve_views(model, expert)
  source, given = resolve_target(target, inp.labels, model.num_classes)
  base = None
  if method == "ig":
    if ig_baseline == "mean":
      if means is None:
        raise ExplainError("ig_baseline='mean' needs means= (FeatureStore.means())")
      fills = masking.fill_vectors(model, means, "mean")
    else:
      fills = [jnp.zeros((h.shape[-1],), h.dtype) for h in inp.hs]
    base = [jnp.broadcast_to(f.astype(h.dtype), h.shape) for f, h in zip(fills, inp.hs)]
  out = _attribute_jit(
    model,
    inp.hs,
    inp.masks,
    inp.labels,
    given,
    base,
    plan=_MapPlan(
      method=method,
      view_experts=view_experts,
      kinds=kinds,
      task_type=task_type,
      source=source,
      ig_steps=int(ig_steps),
      steps_per_call=None if steps_per_call is None else int(steps_per_call),
    ),
  )
  return Attribution(**out, views=names, view_experts=view_experts, method=method, kinds=kinds)
