"""Synthetic planted-interaction data: encoder-output features with known cross-modal pairs.

The generator emits the *post-encoder* token and patch features directly (DATA.md §3.4), so the
ground truth is exact and generation is numpy-only, seeded and fast (~0.25 s at the default size).

Feature model (per sample; `a` = `amplitude`, `σ` = `noise_sigma`, U = orthonormal directions):

* text  x_t[l] = μ_t + E[id_l] + σ·ε (id_l ~ Zipf over `vocab_size`; position 0 is a fixed `<s>`
  vector e_bos instead of E[id]; positions >= the sample's length are padding: zero, mask False).
* image x_v[p] = μ_v + g[p] + σ·ε (g: a Gaussian field on the √P×√P grid with squared-exponential
  correlation of length `image_corr_len`; every patch is valid).
* μ_t, μ_v, E, e_bos and g are projected onto the orthogonal complement of span(U). So the only
  background along a signal direction is the white noise σ·ε, i.i.d. over positions, and the
  train-set mean projects to ~0 on U: mean fill removes a planted bit (a neutral value between ±a),
  while zero fill differs from mean fill in the other directions (μ ≠ 0).

Planted writes (bits are Rademacher ±1; every write has its own direction of U):

* synergy pair k:    x_t[i_sk] += a·b_sk_t·u,   x_v[j_sk] += a·b_sk_v·u';   term w_s·b_sk_t·b_sk_v
* redundancy pair k: x_t[i_rk] += a·(b_rk+η)·u, x_v[j_rk] += a·(b_rk+η)·u'; term w_r·b_rk, with ONE
  draw η ~ N(0, `redundancy_noise`²) written into both: identical copies of one latent (docs/method.md 5.3).
* unique:            x_t[i_ut] += a·b_ut·u,     x_v[j_uv] += a·b_uv·u';     terms w_t·b_ut, w_v·b_uv
* complement pair:   x_t[i_c] += a·b_ct·u,      x_v[j_c] += a·b_cv·u';      term w_c·(b_ct + b_cv),
  two INDEPENDENT bits that each add to the logit: the additive control that a redundancy score
  must rank below the redundant pair (docs/method.md 5.3).
* distractors: `n_distractors` extra positions per modality carrying a planted direction of that
  modality (cycled) with their own random bits, unrelated to the label.

Positions are drawn once from the seed and are distinct; text positions lie in [1, min_text_len)
(never `<s>`, never padding); image positions anywhere on the grid.

Labels (`heads`): binary = one head whose logit f* is the sum of the active terms (DATA.md §3.4
step 4); multilabel = one head per active mechanism (head logit = that mechanism's term alone);
multiclass = the same heads, class = Σ_k 2^k·y_k. Each head: y = 1[f > 0] (`deterministic_labels`;
a tie f = 0 gives 0) or y ~ Bernoulli(sigmoid(kappa·f)). `setting` picks the active mechanisms:
`mixed` (all included), the pure settings `synergy`, `redundancy`, `uniq_text`, `uniq_image`,
`complement` (one weight non-zero), and `null` (the `mixed` rule applied to hidden bits that are
never written into the features: labels independent of x). The features do not depend on
`setting`, `label_type` or the label knobs.

Players of the oracle game: text positions 0..T-1, then image positions T..T+P-1 (patch j is
player `text_len + j`). The oracle value of a coalition is the head logit with the bits of absent
players removed (mean fill): a sum of unanimity games (`oracle_moebius`, `oracle_value`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

GENERATOR_VERSION = 1
MODALITIES = ("text", "image")
SETTINGS = ("mixed", "synergy", "redundancy", "uniq_text", "uniq_image", "complement", "null")
LABEL_TYPES = ("binary", "multiclass", "multilabel")
# Mechanisms that tie a text position to an image position (the rest are one modality's own).
PAIR_KINDS = ("synergy", "redundancy", "complement")
_PURE_KIND = {
  "synergy": "synergy",
  "redundancy": "redundancy",
  "uniq_text": "uniq_text",
  "uniq_image": "uniq_image",
  "complement": "complement",
}
_SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class PlantedConfig:
  """Knobs of the planted-interaction generator.

  Attributes:
    n_train: train-split size.
    n_val: validation-split size.
    n_test: test-split size.
    text_len: padded text length T (position 0 is `<s>`).
    min_text_len: shortest text (incl. `<s>`); lengths ~ U{min_text_len..text_len}. Planted and
      distractor text positions lie in [1, min_text_len).
    image_len: number of patches P, a perfect square (√P×√P grid).
    dim: feature dimension D (shared by both modalities).
    vocab_size: Zipf token-table size of the text background.
    zipf_exponent: Zipf exponent s, p(id = k) ∝ 1 / (k + 1)^s.
    background_scale: scale of the structured background (token embeddings, image field).
    mean_scale: scale of the non-zero background means μ_t, μ_v.
    image_corr_len: correlation length (in patches) of the image background field.
    amplitude: write amplitude a (SNR = a / noise_sigma per bit).
    noise_sigma: σ of the white noise (the only background along signal directions).
    redundancy_noise: std of the shared draw η of a redundancy pair, in bit units.
    n_synergy_pairs: number of synergy pairs.
    n_redundancy_pairs: number of redundancy pairs.
    include_unique: plant one unique text token and one unique patch.
    include_complement: plant one additive-complement cross-modal pair.
    n_distractors: decoy positions per modality (a planted direction with random bits, unrelated to
      the label).
    label_type: `binary`, `multiclass` or `multilabel`.
    setting: `mixed`, `synergy`, `redundancy`, `uniq_text`, `uniq_image`, `complement` or `null`.
    deterministic_labels: y = 1[f > 0]; else y ~ Bernoulli(sigmoid(kappa·f)).
    kappa: inverse temperature of the Bernoulli labels.
    w_s: synergy weight.
    w_r: redundancy weight.
    w_t: unique-text weight.
    w_v: unique-image weight.
    w_c: complement weight (per bit).
    seed: the seed; fixes positions, directions, tables and every sample.
    bayes_mc_samples: Monte Carlo draws for the Bayes-optimal accuracy when bits are noisy.
  """

  n_train: int = 2000
  n_val: int = 500
  n_test: int = 500
  text_len: int = 24
  min_text_len: int = 12
  image_len: int = 16
  dim: int = 32
  vocab_size: int = 1000
  zipf_exponent: float = 1.1
  background_scale: float = 1.0
  mean_scale: float = 1.0
  image_corr_len: float = 1.0
  amplitude: float = 3.0
  noise_sigma: float = 0.5
  redundancy_noise: float = 0.2
  n_synergy_pairs: int = 1
  n_redundancy_pairs: int = 1
  include_unique: bool = True
  include_complement: bool = True
  n_distractors: int = 2
  label_type: str = "binary"
  setting: str = "mixed"
  deterministic_labels: bool = True
  kappa: float = 3.0
  w_s: float = 2.0
  w_r: float = 1.6
  w_t: float = 0.9
  w_v: float = 0.7
  w_c: float = 0.8
  seed: int = 0
  bayes_mc_samples: int = 50_000

  def __post_init__(self):
    _check_types(self)
    if self.setting not in SETTINGS:
      raise ValueError(f"setting {self.setting!r} not in {SETTINGS}")
    if self.label_type not in LABEL_TYPES:
      raise ValueError(f"label_type {self.label_type!r} not in {LABEL_TYPES}")
    grid = math.isqrt(max(self.image_len, 0))
    if grid * grid != self.image_len or self.image_len < 1:
      raise ValueError(f"image_len {self.image_len} must be a perfect square (a √P×√P patch grid)")
    if not 2 <= self.min_text_len <= self.text_len:
      raise ValueError(
        f"need 2 <= min_text_len ({self.min_text_len}) <= text_len ({self.text_len})"
      )
    for name in (
      "n_train",
      "n_val",
      "n_test",
      "n_synergy_pairs",
      "n_redundancy_pairs",
      "n_distractors",
      "seed",
    ):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    if self.n_train < 1:
      raise ValueError("n_train must be >= 1")
    for name in ("dim", "vocab_size", "bayes_mc_samples"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.noise_sigma < 0 or self.redundancy_noise < 0 or self.amplitude < 0:
      raise ValueError("amplitude, noise_sigma and redundancy_noise must be >= 0")
    _check_layout(self)


def _check_types(cfg: PlantedConfig) -> None:
  """Raises ValueError naming a field whose value has the wrong type (e.g. a string for a count)."""
  for f in dataclasses.fields(cfg):
    v = getattr(cfg, f.name)
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if kind == "int":
      ok = isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
      want = "an integer"
    elif kind == "float":
      ok = isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)
      want = "a finite number"
    elif kind == "bool":
      ok = isinstance(v, (bool, np.bool_))
      want = "true or false"
    else:
      ok = isinstance(v, str)
      want = "a string"
    if not ok:
      raise ValueError(f"{f.name} must be {want}, got {v!r}")


def _check_layout(cfg: PlantedConfig) -> None:
  """Checks that the planted writes fit the sizes (directions in `dim`, positions in the sequences).

  Raises:
    ValueError: naming the size that is too small and the smallest value that fits.
  """
  mechs = _mechanism_specs(cfg)
  writes = _writes(mechs)
  n_dirs = len(writes["text"]) + len(writes["image"])
  if n_dirs > cfg.dim:
    raise ValueError(
      f"dim {cfg.dim} is too small: the {n_dirs} planted writes need {n_dirs} orthonormal "
      f"directions, so dim must be >= {n_dirs} (or plant fewer mechanisms)"
    )
  n_text = len(writes["text"]) + cfg.n_distractors
  n_image = len(writes["image"]) + cfg.n_distractors
  if n_text > cfg.min_text_len - 1:
    raise ValueError(
      f"{n_text} text positions (planted + distractors) do not fit in "
      f"[1, min_text_len={cfg.min_text_len}): min_text_len must be >= {n_text + 1}"
    )
  if n_image > cfg.image_len:
    raise ValueError(
      f"{n_image} image positions (planted + distractors) > image_len {cfg.image_len}: image_len "
      f"must be a perfect square >= {n_image}"
    )
  if cfg.n_distractors and (not writes["text"] or not writes["image"]):
    raise ValueError(
      "distractors reuse planted directions: each modality needs at least one planted write "
      "(or set n_distractors=0)"
    )
  _active(cfg, mechs)


# --------------------------------------------------------------------------------------------------
# Structure: mechanisms, positions, directions (fixed by the seed).
# --------------------------------------------------------------------------------------------------


def _mechanism_specs(cfg: PlantedConfig) -> list[dict[str, Any]]:
  """The planted mechanisms in canonical order (without positions)."""
  mechs = []
  for k in range(cfg.n_synergy_pairs):
    mechs.append(
      {
        "name": f"syn{k}",
        "kind": "synergy",
        "raw_weight": cfg.w_s,
        "bits": [f"syn{k}_text", f"syn{k}_image"],
      }
    )
  for k in range(cfg.n_redundancy_pairs):
    mechs.append(
      {"name": f"red{k}", "kind": "redundancy", "raw_weight": cfg.w_r, "bits": [f"red{k}"]}
    )
  if cfg.include_unique:
    mechs.append(
      {"name": "uniq_text", "kind": "uniq_text", "raw_weight": cfg.w_t, "bits": ["uniq_text"]}
    )
    mechs.append(
      {"name": "uniq_image", "kind": "uniq_image", "raw_weight": cfg.w_v, "bits": ["uniq_image"]}
    )
  if cfg.include_complement:
    mechs.append(
      {
        "name": "comp",
        "kind": "complement",
        "raw_weight": cfg.w_c,
        "bits": ["comp_text", "comp_image"],
      }
    )
  return mechs


def _writes(mechs: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[str, str]]]:
  """Per modality, the (mechanism name, source bit) of each planted write, in canonical order."""
  out: dict[str, list[tuple[str, str]]] = {"text": [], "image": []}
  for m in mechs:
    kind, name = m["kind"], m["name"]
    if kind in ("synergy", "complement"):
      out["text"].append((name, m["bits"][0]))
      out["image"].append((name, m["bits"][1]))
    elif kind == "redundancy":
      out["text"].append((name, m["bits"][0]))
      out["image"].append((name, m["bits"][0]))
    elif kind == "uniq_text":
      out["text"].append((name, m["bits"][0]))
    else:
      out["image"].append((name, m["bits"][0]))
  return out


def _orthonormal(rng: np.random.Generator, dim: int, k: int) -> np.ndarray:
  """k orthonormal columns in R^dim. Returns float64 [dim, k]."""
  if k == 0:
    return np.zeros((dim, 0))
  q, r = np.linalg.qr(rng.standard_normal((dim, k)))
  return q * np.sign(np.diag(r))[None, :]  # Unique QR: a deterministic basis for a given draw.


def _project_out(x: np.ndarray, basis: np.ndarray) -> np.ndarray:
  """Removes span(basis) from the last axis of x. x: [..., D], basis: [D, K] orthonormal."""
  return x - (x @ basis) @ basis.T


def _grid_cholesky(image_len: int, corr_len: float) -> np.ndarray:
  """Cholesky factor of the squared-exponential covariance over the patch grid. Returns [P, P]."""
  g = math.isqrt(image_len)
  yy, xx = np.divmod(np.arange(image_len), g)
  d2 = (yy[:, None] - yy[None, :]) ** 2 + (xx[:, None] - xx[None, :]) ** 2
  if corr_len <= 0:
    return np.eye(image_len)
  k = np.exp(-d2 / (2.0 * corr_len**2))
  return np.linalg.cholesky(k + 1e-6 * np.eye(image_len))


def _structure(cfg: PlantedConfig) -> dict[str, Any]:
  """Draws everything fixed by the seed: directions, positions, tables, means."""
  rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
  mechs = _mechanism_specs(cfg)
  writes = _writes(mechs)
  # The sizes fit the writes: `_check_layout` ran when the config was made.
  n_dirs = len(writes["text"]) + len(writes["image"])
  basis = _orthonormal(rng, cfg.dim, n_dirs)  # [D, K]; text writes first, then image writes.
  n_text = len(writes["text"]) + cfg.n_distractors
  n_image = len(writes["image"]) + cfg.n_distractors
  text_pos = (1 + rng.permutation(cfg.min_text_len - 1)[:n_text]).tolist()
  image_pos = rng.permutation(cfg.image_len)[:n_image].tolist()
  mu_t = _project_out(rng.standard_normal(cfg.dim) * cfg.mean_scale, basis)
  mu_v = _project_out(rng.standard_normal(cfg.dim) * cfg.mean_scale, basis)
  table = _project_out(rng.standard_normal((cfg.vocab_size, cfg.dim)) * cfg.background_scale, basis)
  bos = _project_out(rng.standard_normal(cfg.dim) * cfg.background_scale, basis)
  zipf = 1.0 / np.arange(1, cfg.vocab_size + 1) ** cfg.zipf_exponent
  # Per modality: list of (mechanism, bit, position, direction index).
  placed: dict[str, list[tuple[str, str, int, int]]] = {"text": [], "image": []}
  d = 0
  for mod, positions in (("text", text_pos), ("image", image_pos)):
    for (mname, bit), pos in zip(writes[mod], positions):
      placed[mod].append((mname, bit, int(pos), d))
      d += 1
  distractors = {
    mod: [
      {"pos": int(pos), "direction": placed[mod][k % len(placed[mod])][3]}
      for k, pos in enumerate(positions[len(writes[mod]) :])
    ]
    for mod, positions in (("text", text_pos), ("image", image_pos))
  }
  return {
    "mechs": mechs,
    "placed": placed,
    "distractors": distractors,
    "basis": basis,
    "mu": {"text": mu_t, "image": mu_v},
    "table": table,
    "bos": bos,
    "zipf": zipf / zipf.sum(),
    "chol": _grid_cholesky(cfg.image_len, cfg.image_corr_len),
  }


def _active(cfg: PlantedConfig, mechs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
  """Mechanisms that enter the label (in `null`: the mixed rule on hidden bits)."""
  if cfg.setting in ("mixed", "null"):
    act = list(mechs)
  else:
    act = [m for m in mechs if m["kind"] == _PURE_KIND[cfg.setting]]
    if not act:
      raise ValueError(
        f"setting {cfg.setting!r} but no such mechanism is planted (check the include knobs)"
      )
  if not act:
    raise ValueError("no planted mechanism: the label would be constant")
  return act


def _heads(cfg: PlantedConfig, mechs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Label heads: [{name, terms: [{mechanism, weight}]}]."""
  act = _active(cfg, mechs)
  if cfg.label_type == "binary":
    return [
      {"name": "y", "terms": [{"mechanism": m["name"], "weight": m["raw_weight"]} for m in act]}
    ]
  return [
    {"name": m["name"], "terms": [{"mechanism": m["name"], "weight": m["raw_weight"]}]} for m in act
  ]


# --------------------------------------------------------------------------------------------------
# Label rule.
# --------------------------------------------------------------------------------------------------


def _term(kind: str, weight: float, bits: Sequence[np.ndarray]) -> np.ndarray:
  """Value of one mechanism's term. bits: its ±1 bits, each [N]. Returns float64 [N]."""
  b = [np.asarray(x, np.float64) for x in bits]
  if kind == "synergy":
    return weight * b[0] * b[1]
  if kind == "complement":
    return weight * (b[0] + b[1])
  return weight * b[0]


def head_logits(ground_truth: Mapping[str, Any], bits: Mapping[str, np.ndarray]) -> np.ndarray:
  """Evaluates the label heads' logits on given bits (the label rule of `ground_truth`).

  Args:
    ground_truth: the `ground_truth` dict of `generate`.
    bits: {bit name: ±1 values [N]} (a split's `bits`, its `hidden_bits` in the `null` setting, or
      bits recovered from the features).

  Returns:
    float64 [N, H] logits f_h = Σ_terms weight·term(bits).
  """
  mech = {m["name"]: m for m in ground_truth["mechanisms"]}
  cols = []
  for h in ground_truth["label_rule"]["heads"]:
    f = 0.0
    for t in h["terms"]:
      m = mech[t["mechanism"]]
      f = f + _term(m["kind"], t["weight"], [bits[b] for b in m["bits"]])
    cols.append(np.broadcast_to(np.asarray(f, np.float64), np.shape(bits[next(iter(bits))])))
  return np.stack(cols, axis=-1)


def labels_from_logits(
  ground_truth: Mapping[str, Any], logits: np.ndarray, uniform: np.ndarray | None = None
) -> np.ndarray:
  """Applies the label rule of `ground_truth` to head logits.

  Args:
    ground_truth: the `ground_truth` dict.
    logits: [N, H] head logits.
    uniform: [N, H] U(0,1) draws, needed for Bernoulli labels.

  Returns:
    int32 [N] (binary, multiclass: Σ_k 2^k y_k) or uint8 [N, H] (multilabel).
  """
  rule = ground_truth["label_rule"]
  if rule["deterministic"]:
    y = logits > 0
  else:
    if uniform is None:
      raise ValueError("Bernoulli labels need `uniform` draws")
    y = uniform < _sigmoid(rule["kappa"] * logits)
  lt = ground_truth["label_type"]
  if lt == "multilabel":
    return y.astype(np.uint8)
  if lt == "binary":
    return y[:, 0].astype(np.int32)
  return (y.astype(np.int64) * (2 ** np.arange(y.shape[1]))).sum(axis=1).astype(np.int32)


def _sigmoid(x):
  return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))


# --------------------------------------------------------------------------------------------------
# Per-split sampling.
# --------------------------------------------------------------------------------------------------


def _sample_split(
  cfg: PlantedConfig, st: Mapping[str, Any], gt: Mapping[str, Any], split: str, n: int
) -> dict[str, Any]:
  """Draws one split. Draw order and sizes never depend on setting or label knobs."""
  rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1 + _SPLITS.index(split)]))
  T, P, D, a = cfg.text_len, cfg.image_len, cfg.dim, cfg.amplitude
  basis = st["basis"]
  # Background.
  text_len = rng.integers(cfg.min_text_len, T + 1, size=n)
  ids = rng.choice(cfg.vocab_size, size=(n, T), p=st["zipf"])
  x_t = st["mu"]["text"] + st["table"][ids]
  x_t[:, 0] = st["mu"]["text"] + st["bos"]
  x_t += cfg.noise_sigma * rng.standard_normal((n, T, D))
  field = np.einsum("pq,nqd->npd", st["chol"], rng.standard_normal((n, P, D)))
  x_v = st["mu"]["image"] + cfg.background_scale * _project_out(field, basis)
  x_v += cfg.noise_sigma * rng.standard_normal((n, P, D))
  # Latents.
  bit_names = [b for m in st["mechs"] for b in m["bits"]]
  bits = {b: rng.choice(np.array([-1, 1], np.int8), size=n) for b in bit_names}
  eta = {
    f"{m['name']}_eta": cfg.redundancy_noise * rng.standard_normal(n)
    for m in st["mechs"]
    if m["kind"] == "redundancy"
  }
  dis = {
    mod: rng.choice(np.array([-1, 1], np.int8), size=(n, len(st["distractors"][mod])))
    for mod in MODALITIES
  }
  hidden = {b: rng.choice(np.array([-1, 1], np.int8), size=n) for b in bit_names}
  n_heads = len(_heads(cfg, st["mechs"]))
  uniform = rng.random((n, n_heads))
  # Planted writes.
  kind = {m["name"]: m["kind"] for m in st["mechs"]}
  for mod, x in (("text", x_t), ("image", x_v)):
    for mname, bit, pos, d in st["placed"][mod]:
      value = bits[bit].astype(np.float64)
      if kind[mname] == "redundancy":
        value = value + eta[f"{mname}_eta"]  # The SAME draw in both copies.
      x[:, pos] += a * value[:, None] * basis[:, d][None, :]
    for k, dd in enumerate(st["distractors"][mod]):
      x[:, dd["pos"]] += (
        a * dis[mod][:, k, None].astype(np.float64) * basis[:, dd["direction"]][None, :]
      )
  mask_t = np.arange(T)[None, :] < text_len[:, None]
  x_t[~mask_t] = 0.0
  # Labels.
  null = cfg.setting == "null"
  label_logits = head_logits(gt, hidden if null else bits)
  labels = labels_from_logits(gt, label_logits, uniform)
  oracle = np.zeros_like(label_logits) if null else label_logits
  out = {
    "features": {"text": x_t.astype(np.float32), "image": x_v.astype(np.float32)},
    "masks": {"text": mask_t, "image": np.ones((n, P), bool)},
    "labels": labels,
    "ids": [f"synth{cfg.seed}-{split}-{i:06d}" for i in range(n)],
    "bits": bits,
    "noise": {k: v.astype(np.float32) for k, v in eta.items()},
    "distractor_bits": dis,
    "text_len": text_len.astype(np.int32),
    "oracle_logits": oracle.astype(np.float32),
    "label_logits": label_logits.astype(np.float32),
  }
  if null:
    out["hidden_bits"] = hidden
  return out


# --------------------------------------------------------------------------------------------------
# Bayes-optimal accuracy.
# --------------------------------------------------------------------------------------------------


def _phi_upper(x: float) -> float:
  """P(N(0,1) > x)."""
  return 0.5 * math.erfc(x / math.sqrt(2.0))


def _bit_tau(cfg: PlantedConfig, mech_kind: str) -> float:
  """Std of the sufficient statistic of a bit, in bit units (z ~ N(b, τ²)).

  A plain bit: z = proj/a with proj = a·b + σ·ε, so τ = σ/a. A redundancy bit: the optimal
  statistic is the mean of the two copies' projections, z = b + η + (ε_t + ε_v)·σ/(2a), so
  τ² = s_η² + σ²/(2a²).
  """
  if cfg.amplitude == 0:
    return math.inf
  tau = cfg.noise_sigma / cfg.amplitude
  if mech_kind == "redundancy":
    return math.sqrt(cfg.redundancy_noise**2 + tau**2 / 2.0)
  return tau


def _term_dist(kind: str, w: float, p: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """Distribution of one term given per-bit posteriors P(b=+1). Returns values [V], probs [M, V]."""
  if kind == "synergy":
    pp = p[0] * p[1] + (1 - p[0]) * (1 - p[1])
    return np.array([w, -w]), np.stack([pp, 1 - pp], axis=1)
  if kind == "complement":
    p1, p2 = p
    probs = [p1 * p2, p1 * (1 - p2) + (1 - p1) * p2, (1 - p1) * (1 - p2)]
    return np.array([2 * w, 0.0, -2 * w]), np.stack(probs, axis=1)
  return np.array([w, -w]), np.stack([p[0], 1 - p[0]], axis=1)


def _convolve(dists: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """Distribution of a sum of independent terms. Returns support [K], probs [M, K]."""
  vals, probs = np.zeros(1), np.ones((dists[0][1].shape[0], 1))
  for v, pr in dists:
    vals = (vals[:, None] + v[None, :]).ravel()
    probs = (probs[:, :, None] * pr[:, None, :]).reshape(probs.shape[0], -1)
    uniq, inv = np.unique(np.round(vals, 9), return_inverse=True)
    onehot = np.zeros((vals.size, uniq.size))
    onehot[np.arange(vals.size), inv] = 1.0
    vals, probs = uniq, probs @ onehot
  return vals, probs


def _p_label(vals: np.ndarray, deterministic: bool, kappa: float) -> np.ndarray:
  """P(y = 1 | f = vals)."""
  return (vals > 0).astype(np.float64) if deterministic else _sigmoid(kappa * vals)


def _bayes(cfg: PlantedConfig, gt: Mapping[str, Any]) -> dict[str, Any]:
  """Bayes-optimal accuracy of the label rule given the features (see `generate` docs)."""
  mech = {m["name"]: m for m in gt["mechanisms"]}
  heads = gt["label_rule"]["heads"]
  det, kappa = cfg.deterministic_labels, cfg.kappa
  taus = {m["name"]: _bit_tau(cfg, m["kind"]) for m in gt["mechanisms"]}
  used = [t["mechanism"] for h in heads for t in h["terms"]]
  noisy = any(taus[m] > 0 for m in used)
  if cfg.setting == "null" or not noisy:
    method = "exact_enumeration_null_prior" if cfg.setting == "null" else "exact_enumeration"
    per_head = []
    for h in heads:
      dists = [
        _term_dist(mech[t["mechanism"]]["kind"], t["weight"], [np.full(1, 0.5)] * 2)
        for t in h["terms"]
      ]
      vals, probs = _convolve(dists)
      py = _p_label(vals, det, kappa)
      # null: labels independent of x, the best rule predicts the majority class.
      if cfg.setting == "null":
        p1 = float(probs[0] @ py)
        per_head.append(max(p1, 1 - p1))
      else:  # Bits fully recovered: accuracy = E_bits[max(P(y=1|bits), P(y=0|bits))].
        per_head.append(float(probs[0] @ np.maximum(py, 1 - py)))
    se = [0.0] * len(heads)
  else:
    method = "monte_carlo_true_posterior"
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 99]))
    m_draws = cfg.bayes_mc_samples
    per_head, se = [], []
    for h in heads:
      maxpost = np.zeros(m_draws)
      dists = []
      for t in h["terms"]:
        mm = mech[t["mechanism"]]
        tau = taus[mm["name"]]
        post = []
        for _ in range(2 if mm["kind"] in ("synergy", "complement") else 1):
          b = rng.choice(np.array([-1.0, 1.0]), size=m_draws)
          if math.isinf(tau):
            post.append(np.full(m_draws, 0.5))
          elif tau == 0:
            post.append((b > 0).astype(np.float64))
          else:
            z = b + tau * rng.standard_normal(m_draws)
            post.append(_sigmoid(2.0 * z / tau**2))  # P(b=+1 | z) for z ~ N(±1, τ²), uniform prior.
        dists.append(_term_dist(mm["kind"], t["weight"], post))
      vals, probs = _convolve(dists)
      p1 = probs @ _p_label(vals, det, kappa)
      maxpost = np.maximum(p1, 1 - p1)
      per_head.append(float(maxpost.mean()))
      se.append(float(maxpost.std() / math.sqrt(m_draws)))
  # Heads use disjoint bits, so given x they are independent: joint accuracy is the product.
  joint = float(np.prod(per_head))
  if cfg.label_type == "binary":
    acc, what = per_head[0], "accuracy"
  elif cfg.label_type == "multiclass":
    acc, what = joint, "accuracy (joint class = all code bits right)"
  else:
    acc, what = float(np.mean(per_head)), "mean per-label (Hamming) accuracy"
  bit_err = {}
  for m in gt["mechanisms"]:
    for b in m["bits"]:
      tau = taus[m["name"]]
      bit_err[b] = 0.5 if math.isinf(tau) else (0.0 if tau == 0 else _phi_upper(1.0 / tau))
  label_bits = sorted({b for name in used for b in mech[name]["bits"]})
  all_ok = float(np.prod([1 - bit_err[b] for b in label_bits])) if cfg.setting != "null" else None
  return {
    "bayes_optimal_accuracy": acc,
    "bayes_metric": what,
    "bayes_method": method,
    "bayes_mc_samples": m_draws if method.startswith("monte") else 0,
    "bayes_std_error": se[0]
    if cfg.label_type == "binary"
    else float(np.sqrt(np.sum(np.square(se)))),
    "bayes_per_head": dict(zip([h["name"] for h in heads], per_head)),
    "bayes_subset_accuracy": joint,
    "bit_recovery_error": bit_err,
    "all_label_bits_recovered_probability": all_ok,
  }


def _pivotal(cfg: PlantedConfig, gt: Mapping[str, Any]) -> dict[str, float]:
  """P(the thresholded head label flips when a mechanism's term is negated), uniform bits."""
  mech = {m["name"]: m for m in gt["mechanisms"]}
  out = {}
  half = [np.full(1, 0.5)] * 2
  for h in gt["label_rule"]["heads"]:
    for i, t in enumerate(h["terms"]):
      rest = [
        _term_dist(mech[u["mechanism"]]["kind"], u["weight"], half)
        for j, u in enumerate(h["terms"])
        if j != i
      ]
      tv, tp = _term_dist(mech[t["mechanism"]]["kind"], t["weight"], half)
      rv, rp = _convolve(rest) if rest else (np.zeros(1), np.ones((1, 1)))
      flip = ((rv[:, None] + tv[None, :]) > 0) != ((rv[:, None] - tv[None, :]) > 0)
      out[t["mechanism"]] = float(rp[0] @ flip @ tp[0])
  return out


# --------------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------------


def _mechanism_entries(cfg: PlantedConfig, st: Mapping[str, Any]) -> list[dict[str, Any]]:
  """One JSON-able entry per mechanism: kind, label weight, bits and where each modality carries it."""
  active = {m["name"] for m in _active(cfg, st["mechs"])}
  pos: dict[str, dict[str, tuple[int, int]]] = {}
  for mod in MODALITIES:
    for mname, _, p, d in st["placed"][mod]:
      pos.setdefault(mname, {})[mod] = (p, d)
  entries = []
  for m in st["mechs"]:
    entry = {
      "name": m["name"],
      "kind": m["kind"],
      "weight": m["raw_weight"] if (m["name"] in active and cfg.setting != "null") else 0.0,
      "raw_weight": m["raw_weight"],
      "bits": list(m["bits"]),
      "active_in_label": m["name"] in active,
    }
    for mod, (p, d) in pos[m["name"]].items():
      entry[f"{mod}_pos"] = p
      entry[f"{mod}_player"] = p if mod == "text" else cfg.text_len + p
      entry[f"{mod}_direction"] = d
    if m["kind"] == "redundancy":
      entry["noise"] = f"{m['name']}_eta"
      entry["noise_std"] = cfg.redundancy_noise
    entries.append(entry)
  return entries


def _head_formula(head: Mapping[str, Any], mechs: Sequence[Mapping[str, Any]]) -> str:
  """A head's logit as text, e.g. `f_y = 1*b[0]*b[1] + 0.5*b[2]`."""
  parts = []
  for t in head["terms"]:
    mm = next(m for m in mechs if m["name"] == t["mechanism"])
    b = mm["bits"]
    if mm["kind"] == "synergy":
      parts.append(f"{t['weight']:g}*b[{b[0]}]*b[{b[1]}]")
    elif mm["kind"] == "complement":
      parts.append(f"{t['weight']:g}*(b[{b[0]}]+b[{b[1]}])")
    else:
      parts.append(f"{t['weight']:g}*b[{b[0]}]")
  return "f_" + head["name"] + " = " + " + ".join(parts)


def _classes(cfg: PlantedConfig, heads: Sequence[Mapping[str, Any]]) -> tuple[list[str], str]:
  """The class names and the rule from head bits to the label, by label type."""
  if cfg.label_type == "binary":
    return ["negative", "positive"], "label = y_y"
  if cfg.label_type == "multiclass":
    classes = [
      "code_" + "".join(str((c >> k) & 1) for k in range(len(heads)))
      for c in range(2 ** len(heads))
    ]
    rule = (
      "label = sum_k 2**k * y_k over heads in order "
      + str([h["name"] for h in heads])
      + "; class name code_<y_0 y_1 ...>"
    )
    return classes, rule
  return [h["name"] for h in heads], "label[:, k] = y_k (one column per head)"


def _ground_truth(cfg: PlantedConfig, st: Mapping[str, Any]) -> dict[str, Any]:
  """The JSON-able ground truth (without the Bayes numbers)."""
  mechanisms = _mechanism_entries(cfg, st)
  heads = _heads(cfg, st["mechs"])
  for h in heads:
    h["logit"] = _head_formula(h, st["mechs"])
  if cfg.deterministic_labels:
    rule_y = "y_h = 1[f_h > 0] (ties give 0)"
  else:
    rule_y = f"y_h ~ Bernoulli(sigmoid({cfg.kappa:g} * f_h))"
  classes, rule_out = _classes(cfg, heads)
  source = "the bits written into the features"
  if cfg.setting == "null":
    source = "hidden bits never written into the features (null control)"
  grid = math.isqrt(cfg.image_len)
  return {
    "generator": "flmoe_jax.data.synthetic",
    "generator_version": GENERATOR_VERSION,
    "modality_names": list(MODALITIES),
    "setting": cfg.setting,
    "label_type": cfg.label_type,
    "num_classes": len(classes),
    "class_names": classes,
    "players": {
      "order": "text positions 0..T-1, then image positions T..T+P-1 (player = text_len + patch)",
      "n_players": cfg.text_len + cfg.image_len,
      "text_len": cfg.text_len,
      "image_len": cfg.image_len,
      "image_grid": [grid, grid],
      "text_planted_range": [1, cfg.min_text_len],
    },
    "amplitude": cfg.amplitude,
    "noise_sigma": cfg.noise_sigma,
    "directions": st["basis"].T.tolist(),
    "mechanisms": mechanisms,
    "planted_pairs": [e for e in mechanisms if e["kind"] in PAIR_KINDS],
    "unique": [e for e in mechanisms if e["kind"] not in PAIR_KINDS],
    "distractors": st["distractors"],
    "label_rule": {
      "description": "; ".join(h["logit"] for h in heads)
      + f"; {rule_y}; {rule_out}; bits = {source}",
      "heads": heads,
      "deterministic": cfg.deterministic_labels,
      "kappa": cfg.kappa,
      "weights": {k: getattr(cfg, k) for k in ("w_s", "w_r", "w_t", "w_v", "w_c")},
      "bits_source": "hidden" if cfg.setting == "null" else "features",
    },
    "oracle_game": (
      "per head, per sample: v(S) = f_h with the bits of players outside S removed (mean fill); "
      "SOUM coefficients: synergy {i,j}: w*b_i*b_j; redundancy {i}: w*b, {j}: w*b, {i,j}: -w*b; "
      "unique {i}: w*b; "
      "complement {i}: w*b_i, {j}: w*b_j; all zero in the null setting"
    ),
    "config": dataclasses.asdict(cfg),
  }


def generate(cfg: PlantedConfig) -> dict[str, Any]:
  """Generates the planted-interaction dataset.

  Args:
    cfg: the generator config.

  Returns:
    {'train'|'val'|'test': split, 'ground_truth': dict} where each split holds
      `features`: {'text': float32 [N, T, D], 'image': float32 [N, P, D]},
      `masks`: {'text': bool [N, T], 'image': bool [N, P] (all True)},
      `labels`: int32 [N] (binary/multiclass) or uint8 [N, H] (multilabel),
      `ids`: N strings,
      `bits`: {bit name: int8 ±1 [N]} (the latents written into the features),
      `noise`: {'red<k>_eta': float32 [N]} (the shared draw of each redundancy pair),
      `distractor_bits`: {modality: int8 [N, n_distractors]},
      `text_len`: int32 [N] (valid text tokens incl. `<s>`),
      `oracle_logits`: float32 [N, H] (head logits as a function of the features; 0 in `null`),
      `label_logits`: float32 [N, H] (logits the labels were drawn from),
      `hidden_bits` (only `null`): the unwritten bits the labels come from.
    The ground truth is JSON-able: mechanisms with positions/players/directions/weights, planted
    pairs, unique positions, distractors, the label rule, the Bayes-optimal accuracy (method
    stated), the pivotal probability of each mechanism, and the config echo.
  """
  st = _structure(cfg)
  gt = _ground_truth(cfg, st)
  gt.update(_bayes(cfg, gt))
  gt["pivotal_probability"] = _pivotal(cfg, gt) if cfg.deterministic_labels else None
  out: dict[str, Any] = {}
  for split, n in zip(_SPLITS, (cfg.n_train, cfg.n_val, cfg.n_test)):
    out[split] = _sample_split(cfg, st, gt, split, n)
  gt["label_stats"] = {
    split: np.asarray(out[split]["labels"]).reshape(cfg_n, -1).mean(axis=0).round(4).tolist()
    if cfg.label_type != "multiclass"
    else np.bincount(out[split]["labels"], minlength=gt["num_classes"]).tolist()
    for split, cfg_n in zip(_SPLITS, (cfg.n_train, cfg.n_val, cfg.n_test))
    if cfg_n > 0
  }
  out["ground_truth"] = gt
  return out


def config_from_ground_truth(ground_truth: Mapping[str, Any]) -> PlantedConfig:
  """The config that regenerates a store (its per-sample bits included) from its ground truth."""
  return PlantedConfig(**ground_truth["config"])


def sample_bits(split: Mapping[str, Any], index: int) -> dict[str, float]:
  """The ±1 latent bits of one sample of a generated split, as {bit name: float}."""
  return {k: float(v[index]) for k, v in split["bits"].items()}


def oracle_moebius(
  ground_truth: Mapping[str, Any], bits: Mapping[str, float], head: int = 0
) -> dict[tuple[int, ...], float]:
  """Per-sample SOUM (Möbius) coefficients of the oracle game of one head.

  Players are text positions 0..T-1 then image positions T..T+P-1 (`ground_truth['players']`). A
  player that is absent (mean-filled) loses its bit; a redundancy bit survives while either copy is
  present (OR game: u_i + u_j - u_ij).

  Args:
    ground_truth: the `ground_truth` dict.
    bits: {bit name: ±1} of one sample (`sample_bits`).
    head: head index (binary: 0; multilabel/multiclass: one game per code bit / label).

  Returns:
    {sorted player tuple: coefficient}, non-zero coefficients only (empty in the `null` setting);
    the oracle value of coalition S is Σ_{T ⊆ S} c_T, and v(all players) = the head's oracle logit.
  """
  mech = {m["name"]: m for m in ground_truth["mechanisms"]}
  coef: dict[tuple[int, ...], float] = {}

  def add(key, c):
    key = tuple(sorted(key))
    coef[key] = coef.get(key, 0.0) + float(c)

  for t in ground_truth["label_rule"]["heads"][head]["terms"]:
    m = mech[t["mechanism"]]
    w = m["weight"]  # Effective weight on the features: 0 in the null setting.
    if w == 0:
      continue
    b = [float(bits[x]) for x in m["bits"]]
    if m["kind"] == "synergy":
      add((m["text_player"], m["image_player"]), w * b[0] * b[1])
    elif m["kind"] == "redundancy":
      add((m["text_player"],), w * b[0])
      add((m["image_player"],), w * b[0])
      add((m["text_player"], m["image_player"]), -w * b[0])
    elif m["kind"] == "complement":
      add((m["text_player"],), w * b[0])
      add((m["image_player"],), w * b[1])
    elif m["kind"] == "uniq_text":
      add((m["text_player"],), w * b[0])
    else:
      add((m["image_player"],), w * b[0])
  return {k: v for k, v in coef.items() if v != 0.0}


def oracle_value(
  ground_truth: Mapping[str, Any],
  coalition_mask: np.ndarray,
  bits: Mapping[str, float],
  head: int = 0,
) -> np.ndarray:
  """Oracle logit of coalitions, absent players mean-filled (their bits removed).

  Args:
    ground_truth: the `ground_truth` dict.
    coalition_mask: bool [C, n_players], True = player present.
    bits: {bit name: ±1} of one sample.
    head: head index.

  Returns:
    float64 [C] values v(S) = Σ_T c_T·1[T ⊆ S].
  """
  mask = np.asarray(coalition_mask, bool)
  n_players = ground_truth["players"]["n_players"]
  if mask.ndim != 2 or mask.shape[1] != n_players:
    raise ValueError(f"coalition_mask must be [C, {n_players}], got {mask.shape}")
  v = np.zeros(mask.shape[0])
  for players, c in oracle_moebius(ground_truth, bits, head).items():
    v += c * mask[:, list(players)].all(axis=1)
  return v


PLANTED_BITS_FILE = "planted_bits.json"


def write_synthetic_store(
  cfg: PlantedConfig, out_dir: str | os.PathLike, *, overwrite: bool = False
) -> pathlib.Path:
  """Generates the data and writes it as a feature store with `ground_truth.json`.

  Args:
    cfg: the generator config.
    out_dir: the store folder.
    overwrite: replace an existing store.

  Returns:
    The store path.

  Raises:
    StoreError: a split would be empty, or `out_dir` cannot be written (see `store.write_store`).
  """
  from flmoe_jax.data import store  # Local import: generation itself needs only numpy.

  for split, n in zip(_SPLITS, (cfg.n_train, cfg.n_val, cfg.n_test)):
    if n < 1:
      raise store.StoreError(
        f"n_{split}={n} would write an empty {split} split; a feature store needs at least one "
        f"example in every split (set n_{split} >= 1)"
      )
  data = generate(cfg)
  gt = data["ground_truth"]
  spec = [
    store.ModalitySpec(
      name="text", dim=cfg.dim, max_len=cfg.text_len, kind="tokens", encoder="synthetic"
    ),
    store.ModalitySpec(
      name="image", dim=cfg.dim, max_len=cfg.image_len, kind="patches", encoder="synthetic"
    ),
  ]
  task = store.TaskSpec(
    type=cfg.label_type, num_classes=gt["num_classes"], class_names=tuple(gt["class_names"])
  )
  splits = {
    name: store.SplitArrays(
      features=data[name]["features"],
      masks=data[name]["masks"],
      labels=data[name]["labels"],
      ids=data[name]["ids"],
    )
    for name in _SPLITS
  }
  return store.write_store(
    out_dir,
    modalities=spec,
    task=task,
    splits=splits,
    dtype="float32",
    overwrite=overwrite,
    extra_files={
      "ground_truth.json": gt,
      # Each example's planted bits (±1), so that readers (the probes' sign analysis) need not
      # regenerate the data set to recover them.
      PLANTED_BITS_FILE: {
        name: {b: v.astype(int).tolist() for b, v in data[name]["bits"].items()} for name in _SPLITS
      },
    },
  )


__all__ = [
  "PlantedConfig",
  "generate",
  "write_synthetic_store",
  "oracle_moebius",
  "oracle_value",
  "sample_bits",
  "head_logits",
  "labels_from_logits",
  "config_from_ground_truth",
]
