"""Top-K% masking faithfulness (docs/method.md 4.2): comprehensiveness, sufficiency, random control, AOPC.

For every map (view), every K and every sample, per modality m = max(1, ceil(n_valid * K / 100))
tokens are selected among the candidates (valid tokens minus the special first text token):

* comprehensiveness: fill the top-m tokens, comp = p(x) - p(x with top-m filled);
* sufficiency: fill every other candidate token, suff = p(x) - p(x with the complement filled);
* random control: the same m per modality drawn uniformly from the candidates, `repeats` times
  (explicit key), averaged per sample.

Filling replaces the projected feature vector by the modality's fill vector (`masking.apply_fill`;
train-split mean or zero); attention masks are unchanged. p is the target probability (softmax
probability of the target class, or the mean sigmoid over the target label set).

Every masked variant of a batch (the clean input, identified comp + suff for every view and K, and
`repeats` x 2 random variants for every K) is one leading "variant" axis of ONE jitted call; the
model runs on [variants, B, ...] in chunks of `steps_per_call` variants (`lax.map`), the memory
knob. The random selections depend only on K and the candidates, so they are shared by every view.
Each pass yields the mixture and every expert's output, so an expert's map is scored both on that
expert's own output and on the mixture, from the same passes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flmoe_jax.explain import attribution as attr_lib
from flmoe_jax.explain import masking, targets
from flmoe_jax.explain.attribution import Attribution, ExplainError
from flmoe_jax.explain.config import DEFAULT_KS, ExplainConfig, check_ks  # noqa: F401 (re-exported)

Array = jax.Array
OUTPUTS = ("own", "mixture")  # where a view's drop is measured: its own output, or the mixture
RESULT_FORMAT = "flmoe-faithfulness"
RESULT_VERSION = 1


def budget(n_valid: Array, k: float) -> Array:
  """m = max(1, ceil(n_valid * K / 100)) (0 when there is no candidate).

  Computed in float64-safe integer form: K is a percentage with at most a few decimals, so
  n * K / 100 is rounded to 1e-6 before the ceiling (avoids ceil(3.0000000004) = 4).
  """
  raw = jnp.round(n_valid.astype(jnp.float32) * (k / 100.0), 6)
  m = jnp.maximum(1, jnp.ceil(raw).astype(jnp.int32))
  return jnp.where(n_valid > 0, jnp.minimum(m, n_valid), 0)


def topk_mask(scores: Array, candidates: Array, k: float) -> Array:
  """The top-m candidates of each row (m from `budget`), ties broken by position.

  Args:
    scores: [..., T] importances.
    candidates: bool [..., T].
    k: budget in percent.

  Returns:
    bool [..., T], True on the selected tokens.
  """
  m = budget(candidates.sum(-1), k)
  s = jnp.where(candidates, scores, -jnp.inf)
  order = jnp.argsort(-s, axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1, stable=True)
  return (rank < m[..., None]) & candidates


# --------------------------------------------------------------------------------------------------
# Result type.
# --------------------------------------------------------------------------------------------------


def trapezoid_aopc(values: Sequence[float], ks: Sequence[float]) -> float:
  """AOPC as the normalised area under the curve over K: the trapezoid rule between the smallest
  and the largest K, divided by their distance (the mean AOPC weighs every K the same, this one
  weighs them by the spacing of the Ks); one K gives its value.

  Args:
    values: the quantity at each K.
    ks: the budgets K (percent), increasing.
  """
  v, k = np.asarray(values, np.float64), np.asarray(ks, np.float64)
  if len(k) == 1:
    return float(v[0])
  return float(((v[1:] + v[:-1]) / 2 * np.diff(k)).sum() / (k[-1] - k[0]))


@dataclasses.dataclass
class FaithfulnessResult:
  """Per-sample faithfulness of V maps (host numpy; concatenate batches with `concat`).

  Drops are raw probabilities (not x100). `summary()` gives the x100 dataset numbers.

  Attributes:
    ks: budgets K in percent, [nK].
    fill: `mean` or `zero`.
    repeats: random repeats R.
    views: V view names (experts and/or `mixture`).
    view_experts: V expert indices (-1 = mixture).
    comp: [N, V, 2, nK] identified comprehensiveness; axis 2 = OUTPUTS (own output, mixture).
    suff: [N, V, 2, nK] identified sufficiency.
    comp_random: [N, V, 2, nK] random-control comprehensiveness (mean over repeats).
    suff_random: [N, V, 2, nK] random-control sufficiency (mean over repeats).
    p_clean: [N, V, 2] target probability of the clean input.
    valid: bool [N]; False on padding rows of a fixed-shape batch (excluded from summaries).
  """

  ks: tuple[float, ...]
  fill: str
  repeats: int
  views: tuple[str, ...]
  view_experts: tuple[int, ...]
  comp: np.ndarray
  suff: np.ndarray
  comp_random: np.ndarray
  suff_random: np.ndarray
  p_clean: np.ndarray
  valid: np.ndarray

  _ARRAYS = ("comp", "suff", "comp_random", "suff_random", "p_clean", "valid")

  @property
  def num_examples(self) -> int:
    """Number of valid rows."""
    return int(self.valid.sum())

  @classmethod
  def concat(cls, results: Sequence[FaithfulnessResult]) -> FaithfulnessResult:
    """Joins batches (same ks, fill, repeats and views)."""
    if not results:
      raise ExplainError("nothing to concatenate")
    r0 = results[0]
    for r in results[1:]:
      if (r.ks, r.fill, r.repeats, r.views) != (r0.ks, r0.fill, r0.repeats, r0.views):
        raise ExplainError("cannot concatenate faithfulness results of different settings")
    arrays = {a: np.concatenate([getattr(r, a) for r in results]) for a in cls._ARRAYS}
    return dataclasses.replace(r0, **arrays)

  def summary(self) -> dict[str, dict[str, dict]]:
    """Dataset numbers x100 per view and output, over the valid rows.

    Returns:
      {view: {output: {"comp", "comp_random", "suff", "suff_random", "comp_gap", "suff_gap": list
      over K; "aopc": {the same six keys: mean over K}, "aopc_trapezoid": {the same: the
      normalised trapezoid area over K, `trapezoid_aopc`}}}}; comp_gap = identified - random,
      suff_gap = random - identified (both: higher = more faithful).
    """
    v = self.valid.astype(bool)
    out = {}
    for i, view in enumerate(self.views):
      out[view] = {}
      for j, o in enumerate(OUTPUTS):
        d = {
          name: (100.0 * getattr(self, name)[v, i, j].mean(0)).tolist()
          for name in ("comp", "comp_random", "suff", "suff_random")
        }
        d["comp_gap"] = [a - b for a, b in zip(d["comp"], d["comp_random"])]
        d["suff_gap"] = [b - a for a, b in zip(d["suff"], d["suff_random"])]
        d["aopc"] = {name: float(np.mean(vals)) for name, vals in d.items()}
        d["aopc_trapezoid"] = {name: trapezoid_aopc(d[name], self.ks) for name in d["aopc"]}
        out[view][o] = d
    return out

  def to_json(self) -> str:
    """Versioned JSON (`{"format": "flmoe-faithfulness", "version": 1, ...}`) with per-sample arrays."""
    d = {"format": RESULT_FORMAT, "version": RESULT_VERSION}
    for f in dataclasses.fields(self):
      val = getattr(self, f.name)
      d[f.name] = val.tolist() if isinstance(val, np.ndarray) else val
    return json.dumps(d)

  @classmethod
  def from_json(cls, text: str) -> FaithfulnessResult:
    """Inverse of `to_json`."""
    d = json.loads(text)
    if d.get("format") != RESULT_FORMAT or d.get("version") != RESULT_VERSION:
      raise ExplainError(
        f"not a {RESULT_FORMAT} v{RESULT_VERSION} document "
        f"(format {d.get('format')!r}, version {d.get('version')!r})"
      )
    kw = {}
    for f in dataclasses.fields(cls):
      val = d[f.name]
      if f.name in cls._ARRAYS:
        val = np.asarray(val, bool if f.name == "valid" else np.float32)
      elif isinstance(val, list):
        val = tuple(val)
      kw[f.name] = val
    return cls(**kw)


# --------------------------------------------------------------------------------------------------
# The jitted core.
# --------------------------------------------------------------------------------------------------


def _selections(maps, cand, key, *, ks, repeats):
  """Identified and random selections per modality.

  Returns:
    (ident, rand): per modality bool [nK, V, B, T] and [nK, R, B, T].
  """
  ident, rand = [], []
  keys = jax.random.split(key, len(ks))
  for mi, (mp, c) in enumerate(zip(maps, cand, strict=True)):
    mp = jnp.moveaxis(mp, 1, 0)  # [V, B, T]
    ident.append(jnp.stack([topk_mask(mp, c[None], k) for k in ks]))
    rs = []
    for ki, k in enumerate(ks):
      u = jax.random.uniform(jax.random.fold_in(keys[ki], mi), (repeats, *c.shape))
      rs.append(topk_mask(u, c[None], k))
    rand.append(jnp.stack(rs))
  return ident, rand


@dataclasses.dataclass(frozen=True)
class _MaskPlan:
  """What `_faithfulness_jit` masks and scores, all static (hashable): one compile per plan and shape.

  Attributes:
    view_experts: the expert index of each map's view (-1 = the mixture).
    ks: budgets K in percent.
    repeats: random-control repeats R.
    task_type: multilabel | multiclass | binary.
    chunk: masked variants per model call (the memory knob); None = all at once.
  """

  view_experts: tuple[int, ...]
  ks: tuple[float, ...]
  repeats: int
  task_type: str
  chunk: int | None


@functools.partial(nnx.jit, static_argnames=("plan",))
def _faithfulness_jit(model, hs, masks, cand, maps, target, fills, key, *, plan: _MaskPlan):
  """The clean and every masked variant's target probabilities, as drops (see `faithfulness`)."""
  view_experts, task_type = plan.view_experts, plan.task_type
  nk, nv, r = len(plan.ks), len(view_experts), plan.repeats
  b = hs[0].shape[0]
  ident, rand = _selections(maps, cand, key, ks=plan.ks, repeats=r)
  keeps = []
  for sel_i, sel_r, c in zip(ident, rand, cand, strict=True):
    t = c.shape[-1]
    parts = [
      jnp.ones((1, b, t), bool),  # clean
      (~sel_i).reshape(nk * nv, b, t),  # identified comprehensiveness: fill the top-m
      (sel_i | ~c).reshape(nk * nv, b, t),  # identified sufficiency: keep only the top-m
      (~sel_r).reshape(nk * r, b, t),
      (sel_r | ~c).reshape(nk * r, b, t),
    ]
    keeps.append(jnp.concatenate(parts))  # [NV, B, T]

  def body(keep):  # M x [n, B, T] -> ([n, B], [n, B, E])
    n = keep[0].shape[0]
    xs = masking.apply_fill([h[None] for h in hs], keep, fills)
    # Variants x batch as ONE leading axis: plain [N, T, H] matmuls are faster than two batch dims.
    xs = [x.reshape(n * b, *x.shape[2:]) for x in xs]
    ms = [jnp.broadcast_to(m, k.shape).reshape(n * b, -1) for m, k in zip(masks, keep)]
    o = model.forward_projected(xs, ms)
    tg = jnp.broadcast_to(target, (n, *target.shape)).reshape(n * b, -1)
    p_mix = targets.target_score(o.logits, tg, task_type, score="prob")
    p_exp = targets.target_score(o.expert_logits, tg[:, None, :], task_type, score="prob")
    return p_mix.reshape(n, b), p_exp.reshape(n, b, -1)

  p_mix, p_exp = attr_lib.chunked_map(body, keeps, plan.chunk)
  # [NV, B, V, 2]: per view, its own output (expert e, or the mixture) and the mixture.
  own = jnp.stack([p_mix if e < 0 else p_exp[..., e] for e in view_experts], axis=-1)
  p = jnp.stack([own, jnp.broadcast_to(p_mix[..., None], own.shape)], axis=-1)
  return _drops(p, nk=nk, nv=nv, r=r)


def _drops(p, *, nk: int, nv: int, r: int):
  """Drops from the clean probability, per kind of variant.

  Args:
    p: [1 + 2 nK V + 2 nK R, B, V, 2] probabilities of the clean input, then the identified
      comprehensiveness, identified sufficiency, random comprehensiveness and random sufficiency
      variants (`_faithfulness_jit`'s order); last axis: the view's own output, the mixture.
    nk, nv, r: the numbers of budgets, views and random repeats.

  Returns:
    {"comp", "suff", "comp_random", "suff_random"}: [B, V, 2, nK] drops, and "p_clean" [B, V, 2].
  """
  b = p.shape[1]
  p0 = p[0]  # [B, V, 2]
  o = 1
  p_ic = p[o : o + nk * nv].reshape(nk, nv, b, nv, 2)
  o += nk * nv
  p_is = p[o : o + nk * nv].reshape(nk, nv, b, nv, 2)
  o += nk * nv
  p_rc = p[o : o + nk * r].reshape(nk, r, b, nv, 2)
  o += nk * r
  p_rs = p[o : o + nk * r].reshape(nk, r, b, nv, 2)

  def ident(pv):  # [nK, V(map), B, V(output), 2] -> the variant of view v on view v: [B, V, 2, nK]
    d = jnp.diagonal(pv, axis1=1, axis2=3)  # [nK, B, 2, V]
    return jnp.transpose(p0[None] - jnp.transpose(d, (0, 1, 3, 2)), (1, 2, 3, 0))

  def rnd(pv):  # [nK, R, B, V, 2] -> [B, V, 2, nK]
    return jnp.transpose((p0[None, None] - pv).mean(1), (1, 2, 3, 0))

  return {
    "comp": ident(p_ic),
    "suff": ident(p_is),
    "comp_random": rnd(p_rc),
    "suff_random": rnd(p_rs),
    "p_clean": p0,
  }


# --------------------------------------------------------------------------------------------------
# Public entry point.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MaskingOptions:
  """How `faithfulness` masks: the budgets, the fill, the random control and the memory knob.

  Checked when made (`ExplainError` names a bad value).

  Attributes:
    ks: budgets K in percent, each in (0, 100] (normalised by `check_ks`).
    fill: `mean` (projected train-split mean; `faithfulness` then needs `means`) or `zero`.
    repeats: random-control repeats R.
    steps_per_call: masked variants per model call (the memory knob); None = all at once.
  """

  ks: tuple[float, ...] = ExplainConfig.ks
  fill: str = ExplainConfig.fill
  repeats: int = ExplainConfig.repeats
  steps_per_call: int | None = ExplainConfig.steps_per_call

  def __post_init__(self):
    object.__setattr__(self, "ks", check_ks(self.ks))
    if int(self.repeats) < 1:
      raise ExplainError(f"repeats must be >= 1, got {self.repeats}")
    if self.steps_per_call is not None and int(self.steps_per_call) < 1:
      raise ExplainError(f"steps_per_call must be >= 1 or None, got {self.steps_per_call}")
    if self.fill not in masking.FILL_MODES:
      raise ExplainError(f"fill {self.fill!r} not in {masking.FILL_MODES}")


def faithfulness(
  model,
  batch,
  maps: Attribution | Sequence[Array],
  *,
  key: Array,
  means: Sequence[np.ndarray] | None = None,
  options: MaskingOptions | None = None,
  target: str | Array | None = None,
  kinds=None,
  task_type: str | None = None,
  views: Sequence[int | str] | None = None,
) -> FaithfulnessResult:
  """Top-K% masking faithfulness of importance maps on one batch (docs/method.md 4.2).

  Example:
    >>> attr = attribute(model, batch, kinds=store, task_type=store.task.type)
    >>> res = faithfulness(model, batch, attr, means=store.means(), key=jax.random.key(42),
    ...                    options=MaskingOptions(ks=(10, 20)))
    >>> res.summary()["mixture"]["own"]["aopc"]["comp_gap"]

  Args:
    model: the FLI2MoE or DenseTransformer the maps were computed for.
    batch: the same batch as the maps (store batch dict, or (hs, masks) projected features).
    maps: an `Attribution` (its target, kinds and views are used), or per modality float
      [B, V, T_m] or [B, T_m] maps (then pass target, kinds and views).
    key: PRNG key of the random control (mandatory: results must be reproducible).
    means: per modality raw train-split means [D_m] (`FeatureStore.means()`); needed by the mean fill.
    options: the budgets, fill, random-control repeats and memory knob (default `MaskingOptions()`).
    target: for raw maps: `pred`, `true` or a [B, C] mask; default: the Attribution's target.
    kinds: for raw maps: per modality `tokens`/`patches` (or the FeatureStore).
    task_type: `multilabel`/`multiclass`/`binary`; inferred from batch labels if None.
    views: for raw maps: the expert index (or name, or `mixture`) each map belongs to; default
      `mixture` for a single map.

  Returns:
    A `FaithfulnessResult` with per-sample drops [B, V, 2, nK].
  """
  options = options if options is not None else MaskingOptions()
  fills = masking.fill_vectors(model, means, options.fill, error=ExplainError)
  inp = attr_lib.resolve_inputs(model, batch)
  task_type = attr_lib.resolve_task_type(task_type, inp.labels)
  b = inp.hs[0].shape[0]
  names, view_experts, kinds, mp, tgt = _resolve_maps(
    model, inp, maps, target=target, kinds=kinds, views=views, task_type=task_type
  )
  cand = masking.candidate_masks(inp.masks, kinds)
  out = _faithfulness_jit(
    model,
    inp.hs,
    inp.masks,
    cand,
    mp,
    jnp.asarray(tgt, jnp.float32),
    fills,
    key,
    plan=_MaskPlan(
      view_experts=tuple(view_experts),
      ks=options.ks,
      repeats=int(options.repeats),
      task_type=task_type,
      chunk=None if options.steps_per_call is None else int(options.steps_per_call),
    ),
  )
  out = jax.device_get(out)
  valid = np.ones(b, bool) if inp.weight is None else np.asarray(inp.weight) > 0
  return FaithfulnessResult(
    ks=options.ks,
    fill=options.fill,
    repeats=int(options.repeats),
    views=tuple(names),
    view_experts=tuple(view_experts),
    valid=valid,
    **{k: np.asarray(v, np.float32) for k, v in out.items()},
  )


def _resolve_maps(model, inp, maps, *, target, kinds, views, task_type):
  """The views, kinds, maps [B, V, T_m] and target mask [B, C] of `faithfulness`'s arguments.

  An `Attribution` brings its own views, kinds and target; raw maps need `views` (unless there is
  one map per sample: the mixture's), `kinds`, and a target (`pred`/`true`: the clean mixture's).
  """
  b = inp.hs[0].shape[0]
  if isinstance(maps, Attribution):
    names, view_experts = maps.views, maps.view_experts
    kinds = maps.kinds if kinds is None else attr_lib.resolve_kinds(kinds, model.num_modalities)
    mp = [jnp.asarray(m, jnp.float32) for m in maps.maps]
    if target is None:
      tgt = maps.target
    else:
      source, tgt = attr_lib.resolve_target(target, inp.labels, model.num_classes)
  else:
    kinds = attr_lib.resolve_kinds(kinds, model.num_modalities)
    mp = [jnp.asarray(m, jnp.float32) for m in maps]
    mp = [m[:, None] if m.ndim == 2 else m for m in mp]
    nv = mp[0].shape[1]
    if views is None:
      if nv != 1:
        raise ExplainError(f"{nv} maps per sample: pass views= (expert index or 'mixture' each)")
      views = [attr_lib.MIXTURE]
    names, view_experts = attr_lib.resolve_views(model, list(views))
    if len(names) != nv:
      raise ExplainError(f"{len(names)} views for {nv} maps per sample")
    tgt = None
    if target is not None and not isinstance(target, str):
      source, tgt = attr_lib.resolve_target(target, inp.labels, model.num_classes)
    else:
      source, _ = attr_lib.resolve_target(target or "pred", inp.labels, model.num_classes)
  if len(mp) != model.num_modalities:
    raise ExplainError(f"got maps for {len(mp)} modalities, the model has {model.num_modalities}")
  for m, h in zip(mp, inp.hs, strict=True):
    if m.ndim != 3 or m.shape[0] != b or m.shape[2] != h.shape[1]:
      raise ExplainError(f"maps of shape {tuple(m.shape)} do not match a batch of {tuple(h.shape)}")
    if m.shape[1] != len(names):
      raise ExplainError(f"maps have {m.shape[1]} views, expected {len(names)}")
  if tgt is None:  # raw maps with target 'pred'/'true': the clean mixture's target
    logits = _clean_logits(model, inp.hs, inp.masks)
    tgt = targets.target_mask(logits, task_type, source=source, labels=inp.labels)
  return names, view_experts, kinds, mp, tgt


@nnx.jit
def _clean_logits(model, hs, masks):
  return model.forward_projected(hs, masks).logits.astype(jnp.float32)
