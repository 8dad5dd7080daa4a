"""`flmoe probe`: interaction probes of a trained run, written to `W/probe/<split>.json` (+ figures).

For each evaluated example (the first `samples` rows of the split):
  1. clean forward of the full model -> target (docs/method.md 4.3) and its probability;
  2. players = candidate tokens (valid, not `<s>`); candidate pairs (topk / random / all);
  3. Monte Carlo SII and redundancy gaps of the candidate pairs, on three scales (the target's logit,
     probability and log-odds), for the synergy expert (ranked by SII) and the redundancy expert
     (ranked by RG);
  4. pair-level masking in the full model: top-b pairs vs matched random pairs (docs/method.md 5.5).
Examples are processed in batches of up to 64: player selection, candidate pairs and masking
coalitions are built per example on the host, then every model evaluation of a batch is one jitted
call (one per probe role for step 3, one for step 4). Player and pair arrays are padded to fixed
sizes and the last batch is padded to the batch size, so every batch runs the same compiled programs.
On a synthetic store the planted pairs are scored (hit@1, MRR, sign agreement, calls), and every
run reports whether any pair stands out (`standout.py`): per example against the Monte Carlo
standard error, and across examples as a pair that ranks first in significantly more than a set share
of them (the null control). Only `W/probe/` is written, atomically; checkpoints and metrics of the run are untouched.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flmoe_jax import choices, significance
from flmoe_jax import metrics as metrics_lib
from flmoe_jax.explain import masking, targets
from flmoe_jax.probes import pairs as pairs_lib
from flmoe_jax.probes import planted as planted_lib
from flmoe_jax.probes import standout as standout_lib
from flmoe_jax.probes.config import DEFAULT_SAMPLES, ProbeConfig
from flmoe_jax.probes.games import ModelValueFn, PlayerMap, ProbeError, expert_index, split_expert
from flmoe_jax.probes.results import (
  PROBE_FORMAT,
  PROBE_VERSION,
  ProbeReport,
  round_sig,
  round_tree,
)
from flmoe_jax.probes.shapley import (
  PAIR_INDICES,
  check_memory_knob,
  draws_for_budget,
  evaluate_examples,
  full_input_coalitions,
  full_input_rg,
  jackknife_se,
  mc_pair_statistics_batch,
  reference_se,
)
from flmoe_jax.rundir import RunDir

ROLES = ("sii", "rg")  # synergy probe (SII on the synergy expert), redundancy probe (RG on red)
SCALES = choices.SCORE_SCALES
# The two random controls of pair masking, as the probe file names them.
_CONTROLS = {
  "random": "random tokens of the candidate pairs, as many per modality as the ranked pairs mask",
  "random_all": "random tokens of all tokens, as many per modality as the ranked pairs mask",
}
MAX_BATCH = 64  # examples per batched call (their coalitions still obey the memory knob)


@functools.partial(jax.jit, static_argnames=("graph", "task_type", "source"))
def _prepare(graph, state, xs, masks, labels, *, task_type, source):
  """Projection, clean mixture logits, target [B, C], its probability [B] and gate weights [B, E]."""
  model = nnx.merge(graph, state)
  hs = model.project(xs)
  out = model.forward_projected(hs, masks)
  target = targets.target_mask(out.logits, task_type, source=source, labels=labels)
  p_target = targets.target_score(out.logits, target, task_type, score="prob")
  return hs, out.logits, target, p_target, out.weights


@functools.partial(jax.jit, static_argnames=("fn", "n_players", "n_draws", "antithetic", "chunk"))
def _score_batch(
  fn, shared, batched, keys, pairs, n_valid, *, n_players, n_draws, antithetic, chunk
):
  """One probe role on N examples' padded model games, in one program.

  Args:
    fn: the role's `ModelValueFn` (static).
    shared: params common to the examples (`state`, `fills`).
    batched: per-example params [N, ...] (`hs`, `masks`, `target`, `player_modality`,
      `player_position`).
    keys: PRNG keys [N].
    pairs: int [N, P, 2] padded candidate pairs.
    n_valid: int [N] real player counts.
    n_players: padded player count (static).
    n_draws: R draws per pair.
    antithetic: complement-paired draws.
    chunk: the memory knob: most coalitions per value-function call across the batch.

  Returns:
    ({index: (mean [N, P, K], stderr [N, P, K])}, endpoint values v(∅), v(N) [N, 2, K]). The
    indices are the MC ones and `RG-full`, the exact redundancy gap from the full input
    (`shapley.full_input_coalitions`; its stderr is 0).
  """
  stats = mc_pair_statistics_batch(
    fn,
    shared,
    batched,
    keys,
    pairs,
    n_valid,
    n_players=n_players,
    n_draws=n_draws,
    antithetic=antithetic,
    chunk=chunk,
  )
  full = jnp.arange(n_players) < n_valid[:, None]  # [N, n]
  ends = jnp.stack([jnp.zeros_like(full), full], 1)  # [N, 2, n]: the empty and the grand coalition
  n_ex, n_pairs = pairs.shape[:2]
  drops = jax.vmap(lambda p, nv: full_input_coalitions(p, nv, n_players))(pairs, n_valid)
  coal = jnp.concatenate([ends, drops.reshape(n_ex, 3 * n_pairs, n_players)], 1)
  vals = evaluate_examples(fn, shared, batched, coal, chunk)  # [N, 2 + 3P, *out]
  rg_full = full_input_rg(vals[:, 2:].reshape(n_ex, n_pairs, 3, *vals.shape[2:]), axis=2)
  stats = {**stats, "RG-full": (rg_full, jnp.zeros_like(rg_full))}
  return stats, vals[:, :2]


# Indices linear in the value function: their per-reference estimates average to the mean game's.
_LINEAR = ("SII", "RG-additive")


def _reference_stats(stats: dict, ends: np.ndarray, per_reference: bool) -> tuple[dict, np.ndarray]:
  """Mean-game statistics from a per-reference marginal game's [..., S * (1 + 2K)] outputs.

  The values are the mean game's; every SE includes the reference draw: the linear indices' from
  their per-reference values (`shapley.reference_se`), the others' (RG and RG-full: a max and a min
  of drops, whose per-reference values say nothing about the mean game's) by the jackknife over the
  leave-one-out games (`shapley.jackknife_se`).
  """
  if not per_reference:
    return stats, ends
  s = len(SCALES)
  ends = ends.reshape(*ends.shape[:-1], s, -1)[..., 0]
  out = {}
  for name, (mu, se) in stats.items():
    mu = mu.reshape(*mu.shape[:-1], s, -1)
    se = se.reshape(*se.shape[:-1], s, -1)
    k = (mu.shape[-1] - 1) // 2
    if name in _LINEAR:
      se0 = reference_se(se[..., 0], mu[..., 1 : 1 + k], se[..., 1 : 1 + k])
    else:
      se0 = jackknife_se(se[..., 0], mu[..., 1 + k :])
    out[name] = (mu[..., 0], se0.astype(np.float32))
  return out, ends


def _example_keys(key, rows, role_index: int):
  """Per-example keys [N]: fold_in(fold_in(key, row), role), as `jax.random.fold_in` per example."""
  return jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(key, r), role_index))(rows)


def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
  """Pads the leading axis to n by repeating the last row (padded examples are dropped later)."""
  a = np.asarray(a)
  return np.concatenate([a, np.repeat(a[-1:], n - len(a), 0)]) if len(a) < n else a


def _probe_experts(model, sii_expert: str | None, rg_expert: str | None) -> dict[str, str]:
  """Which game each probe scores: syn / red experts by default (the dense baseline: its output)."""
  names = tuple(model.expert_names)
  default = (
    {"sii": "syn", "rg": "red"}
    if {"syn", "red"} <= set(names)
    else {"sii": names[0], "rg": names[0]}
  )
  out = {"sii": sii_expert or default["sii"], "rg": rg_expert or default["rg"]}
  for role, e in out.items():
    if e != "mixture" and e not in names:
      raise ProbeError(f"--{role}-expert {e!r} not in {names + ('mixture',)}")
  return out


@dataclasses.dataclass
class _Setup:
  """What every batch of one probe shares: the run, the examples, the games and their fills.

  Attributes:
    run: the restored run (model, store, config).
    split: the probed split's arrays (masks, ids).
    rows: int [N] the probed rows of the split.
    cand: per modality, bool [N, T_m] candidate players (valid tokens, not `<s>`).
    n_per_mod: int [N, M] candidates per modality.
    n_max: the padded player count.
    p_max: the padded candidate-pair count.
    budget: coalition evaluations per example and expert game.
    n_draws: MC draws per pair.
    chunk: the memory knob (coalitions per call); `role_chunk` per role after the marginal fill's
      references (`passes` model passes per coalition).
    experts: the game of each role (`sii`, `rg`): an expert name or `mixture`.
    expert_fn, expert_state: per role, the hashable value function and the game's params.
    mix_fn, state_full: the full model's value function (pair masking) and params.
    mask_fill: the fill of pair masking and of the grad_x_input maps; `fills` its vectors.
    role_fills: per role, the game's fill vectors (or the marginal game's references).
    reference_rows: train rows of the marginal fill's references, or None.
    planted: planted pairs and per-example signs of a synthetic store, or None.
    batch_size: examples per batched call (one compiled shape for the whole probe).
  """

  run: Any
  split: Any
  rows: np.ndarray
  cand: list[np.ndarray]
  n_per_mod: np.ndarray
  n_max: int
  p_max: int
  budget: int
  n_draws: int
  chunk: int
  role_chunk: dict[str, int]
  passes: dict[str, int]
  experts: dict[str, str]
  expert_fn: dict[str, ModelValueFn]
  expert_state: dict[str, Any]
  mix_fn: ModelValueFn
  state_full: Any
  mask_fill: str
  fills: list
  role_fills: dict[str, Any]
  reference_rows: np.ndarray | None
  planted: dict | None
  batch_size: int

  @property
  def fs(self):
    return self.run.store


def run_probe(cfg: ProbeConfig, workdir: str | pathlib.Path, *, log=print) -> ProbeReport:
  """Runs the interaction probes of a trained run and writes `W/probe/<split>[_<tag>].json`.

  Args:
    cfg: the probe's options (`ProbeConfig`; the fields document each one).
    workdir: the run directory (`flmoe train --workdir`).
    log: progress printer (None = silent).

  Returns:
    The `ProbeReport` written to `RunDir(workdir).probe(cfg.split, cfg.tag)` (figures, when asked
    for, are PNGs beside it).

  Raises:
    ProbeError / RunDirError / StoreError: bad options or run, before anything is computed or
      written.
  """
  log = log or (lambda *a, **k: None)
  t0 = time.time()
  s = _setup(cfg, workdir)
  log(
    f"probe {workdir} [{cfg.split}]: {len(s.rows)} examples, {s.p_max} {cfg.pairs} pairs each, "
    f"{s.n_draws} draws/pair ({'antithetic' if cfg.antithetic else 'plain'}), budget {s.budget} "
    f"coalitions per example and expert"
  )
  # One batch shape for the whole run (every program compiles once, ahead: timings exclude it).
  # Padded slots repeat the batch's last example and are dropped from every result.
  programs: dict[str, Any] = {}
  done = [
    _probe_batch(s, cfg, start, programs, log, t0) for start in range(0, len(s.rows), s.batch_size)
  ]
  doc = _report(s, cfg, workdir, [b for batch in done for b in batch], t0)
  if cfg.stability:
    from flmoe_jax import runs

    doc["stability"] = _stability(doc, cfg, workdir, runs.finished_seeds(workdir), log)
  # The typed artifact checks the document's structure before a byte of it is written.
  report = ProbeReport.from_dict({"format": PROBE_FORMAT, "version": PROBE_VERSION, **doc})
  path = report.save(RunDir(workdir).probe(cfg.split, cfg.tag))
  if cfg.figures:
    from flmoe_jax.probes import figures as figures_lib

    written = figures_lib.write_figures(
      doc, RunDir(workdir).probe_dir, cfg.stem, s.fs, n_heatmaps=cfg.n_heatmaps
    )
    log(f"figures: {', '.join(p.name for p in written)}")
  log(f"wrote {path} ({time.time() - t0:.0f}s)")
  return report


def _memory(cfg: ProbeConfig) -> tuple[int, dict[str, int], dict[str, int]]:
  """The memory knob, model passes per coalition and the knob per role (`_Setup`)."""
  chunk = check_memory_knob(cfg.max_coalitions_per_call)
  if "marginal" in cfg.role_fill.values() and chunk < cfg.references:
    raise ProbeError(
      f"max_coalitions_per_call={chunk} cannot fit one coalition on {cfg.references} references "
      "(the marginal fill evaluates each coalition once per reference)"
    )
  # Model passes per coalition, and the memory knob per role: K inputs per coalition when marginal.
  passes = {r: cfg.references if f == "marginal" else 1 for r, f in cfg.role_fill.items()}
  return chunk, passes, {r: chunk // passes[r] for r in ROLES}


def _candidates(cfg: ProbeConfig, fs, rows: np.ndarray, kinds) -> tuple[list, np.ndarray, int]:
  """Candidate players [N, T_m] per modality, their counts [N, M] and the padded pair count."""
  split_obj = fs.split(cfg.split)
  m_count = len(kinds)
  cand = [np.asarray(split_obj.masks[m][rows], bool).copy() for m in range(m_count)]
  for m in range(m_count):
    if kinds[m] == "tokens":
      cand[m][:, 0] = False
  n_per_mod = np.stack([c.sum(1) for c in cand], 1)  # [N, M]
  empty = np.flatnonzero((n_per_mod == 0).any(1))
  if empty.size:
    raise ProbeError(
      f"{cfg.split} row {int(rows[empty[0]])} has a modality without any candidate "
      "token; probes need every modality present"
    )
  mod_pairs = [(a, b) for a in range(m_count) for b in range(a + 1, m_count)]
  if cfg.pairs == "topk":
    p_max = sum(cfg.k * cfg.k for _ in mod_pairs)
  elif cfg.pairs == "random":
    p_max = cfg.n_random_pairs
  else:
    p_max = int(max(sum(int(c[a]) * int(c[b]) for a, b in mod_pairs) for c in n_per_mod))
    if p_max > cfg.max_all_pairs:
      raise ProbeError(
        f"--pairs all means up to {p_max} pairs per example (> {cfg.max_all_pairs}); "
        "use --pairs topk or random"
      )
  return cand, n_per_mod, p_max


def _games(cfg: ProbeConfig, model, fs) -> dict[str, Any]:
  """The value functions, params and fills of the two probe games and of pair masking."""
  task, lengths = fs.task.type, tuple(m.max_len for m in fs.modalities)
  role_fill = cfg.role_fill
  graphdef_full, state_full = nnx.split(model)
  experts = _probe_experts(model, cfg.sii_expert, cfg.rg_expert)
  expert_fn, expert_state = {}, {}
  for role in ROLES:
    gd, st, mode = split_expert(model, experts[role])
    # The marginal game also returns each reference's value and each leave-one-out mean: the SEs
    # then include the draw of the references (`_reference_stats`).
    per_ref = role_fill[role] == "marginal" and cfg.references > 1
    expert_fn[role] = ModelValueFn(gd, mode, task, SCALES, lengths, per_ref)
    expert_state[role] = st
  mix_fn = ModelValueFn(graphdef_full, "mixture", task, ("prob",), lengths)
  # The masking fill (pair masking, grad_x_input maps): the marginal game's runs use the mean.
  mask_fill = cfg.fill if cfg.fill in masking.FILL_MODES else "mean"
  by_mode = {
    f: masking.fill_vectors(model, fs.means(), f)
    for f in {mask_fill, *role_fill.values()} - {"marginal"}
  }
  reference_rows = None
  if "marginal" in role_fill.values():
    if "train" not in fs.counts:
      raise ProbeError(
        f"the marginal fill draws its references from the train split; {fs.path} has none"
      )
    n_train, n_ref = fs.counts["train"], cfg.references
    reference_rows = np.sort(
      np.random.default_rng([cfg.seed, 11]).choice(n_train, n_ref, replace=n_ref > n_train)
    )
    ref = fs.gather("train", reference_rows)
    by_mode["marginal"] = masking.reference_fills(model, ref["x"], ref["mask"], fs.means())
  return {
    "experts": experts,
    "expert_fn": expert_fn,
    "expert_state": expert_state,
    "mix_fn": mix_fn,
    "state_full": state_full,
    "mask_fill": mask_fill,
    "fills": by_mode[mask_fill],
    "role_fills": {r: by_mode[f] for r, f in role_fill.items()},
    "reference_rows": reference_rows,
  }


def _setup(cfg: ProbeConfig, workdir) -> _Setup:
  """Checks the options against the run and builds what the batches share; writes nothing."""
  from flmoe_jax import runs

  chunk, passes, role_chunk = _memory(cfg)
  # The split and the sample count, from the run's store, before the model is restored.
  n_rows = runs.run_store(workdir).split(cfg.split).num_examples
  if n_rows == 0:
    raise ProbeError(f"the {cfg.split} split has no examples; probe another split (--split)")
  samples = cfg.samples
  if samples is None:
    samples = min(DEFAULT_SAMPLES, n_rows)
  elif samples > n_rows:
    raise ProbeError(
      f"--samples {samples} but the {cfg.split} split has only {n_rows} examples; pass --samples "
      f"{n_rows} or fewer"
    )
  run = runs.load_run(workdir, seed=cfg.run_seed, which=cfg.which, attention=cfg.attention)
  runs.require_token_level(run, "pair probes")
  fs, kinds = run.store, run.kinds
  if len(fs.modality_names) < 2:
    raise ProbeError("cross-modal pairs need at least two modalities")
  rows = np.arange(samples)
  n_max = sum(m.max_len - (1 if k == "tokens" else 0) for m, k in zip(fs.modalities, kinds))
  cand, n_per_mod, p_max = _candidates(cfg, fs, rows, kinds)
  budget = cfg.budget if cfg.budget is not None else cfg.draws * 4 * p_max
  n_draws = draws_for_budget(budget, p_max, antithetic=cfg.antithetic)
  gt = fs.ground_truth()
  # At most MAX_BATCH examples per batch, split evenly so that the last batch needs the least padding.
  n_batches = -(-len(rows) // MAX_BATCH)
  return _Setup(
    run=run,
    split=fs.split(cfg.split),
    rows=rows,
    cand=cand,
    n_per_mod=n_per_mod,
    n_max=n_max,
    p_max=p_max,
    budget=int(budget),
    n_draws=n_draws,
    chunk=chunk,
    role_chunk=role_chunk,
    passes=passes,
    **_games(cfg, run.model, fs),
    planted=planted_lib.planted_setup(gt, fs, cfg.split, rows) if gt else None,
    batch_size=-(-len(rows) // n_batches),
  )


def _batch_games(s: _Setup, cfg: ProbeConfig, start: int, idx: np.ndarray) -> dict[str, Any]:
  """One batch's clean forward, players and candidate pairs, and each role's scoring arguments."""
  fs, names, bs = s.fs, s.fs.modality_names, s.batch_size
  data = fs.gather(cfg.split, _pad_rows(idx, bs))
  xs = [jnp.asarray(x, jnp.float32) for x in data["x"]]
  mks = [jnp.asarray(mk, bool) for mk in data["mask"]]
  labels = jnp.asarray(data["label"]) if cfg.target == "true" else None
  hs, logits, target, p_clean, gate = _prepare(
    s.mix_fn.graph, s.state_full, xs, mks, labels, task_type=fs.task.type, source=cfg.target
  )
  maps = _token_maps(s, cfg, start, hs, mks, target) if cfg.pairs == "topk" else {}
  # Host inputs of every example: players and candidate pairs, padded to fixed sizes.
  n_real = len(idx)
  pms = [PlayerMap.from_masks([c[start + bi] for c in s.cand], names) for bi in range(n_real)]
  pmods, pposs = (np.stack(a) for a in zip(*(pm.padded(s.n_max) for pm in pms)))  # [n_real, n]
  n_valid = np.array([pm.n_players for pm in pms], np.int32)
  cps = {role: [] for role in ROLES}
  for bi, (row, pm) in enumerate(zip(idx, pms)):
    rng = np.random.default_rng([cfg.seed, int(row)])
    common = None  # random / all: both roles score the same pairs
    if cfg.pairs == "random":
      common = pairs_lib.random_pairs(pm, cfg.n_random_pairs, rng)
    elif cfg.pairs == "all":
      common = pairs_lib.cross_modal_pairs(pm)
    for role in ROLES:
      cps[role].append(
        common
        if common is not None
        else pairs_lib.topk_pairs(pm, [a[bi] for a in maps[role]], cfg.k)
      )
  batched = {
    "hs": hs,
    "masks": mks,
    "target": target,
    "player_modality": jnp.asarray(_pad_rows(pmods, bs)),
    "player_position": jnp.asarray(_pad_rows(pposs, bs)),
  }
  row_ids = jnp.asarray(_pad_rows(idx, bs), jnp.uint32)
  key = jax.random.key(cfg.seed)
  args = {}
  for ri, role in enumerate(ROLES):
    padded = np.stack([pairs_lib.pad_pairs(cp, s.p_max)[0] for cp in cps[role]])  # [n_real, P, 2]
    args[role] = (
      {"state": s.expert_state[role], "fills": s.role_fills[role]},
      batched,
      _example_keys(key, row_ids, ri),
      jnp.asarray(_pad_rows(padded, bs)),
      jnp.asarray(_pad_rows(n_valid, bs)),
    )
  return {
    "data": data,
    "logits": logits,
    "target": np.asarray(target),
    "p_clean": np.asarray(p_clean),
    "gate": np.asarray(gate),
    "pms": pms,
    "pmods": pmods,
    "n_valid": n_valid,
    "cps": cps,
    "batched": batched,
    "args": args,
  }


def _probe_batch(s: _Setup, cfg: ProbeConfig, start: int, programs: dict, log, t0) -> list[dict]:
  """Probes the examples of one batch: per example its record, clean logits, masked logits.

  Returns:
    Per example {"record", "clean_logits" [C], "label", "masked" [2, n_b, 1 + 2 * reps, C],
    "t_mc"}: the MC seconds are the batch's two MC calls averaged over its real examples
    (compilation excluded; the first batch still carries the programs' one-time first-run cost).
  """
  idx = s.rows[start : start + s.batch_size]
  n_real = len(idx)
  g = _batch_games(s, cfg, start, idx)
  statics = {"n_players": s.n_max, "n_draws": s.n_draws, "antithetic": cfg.antithetic}
  for role in ROLES:
    if role not in programs:
      programs[role] = _score_batch.lower(
        s.expert_fn[role], *g["args"][role], **statics, chunk=s.role_chunk[role]
      ).compile()
  # One batched call per role: MC statistics and endpoint values of every example.
  t1 = time.time()
  out = jax.device_get({role: programs[role](*g["args"][role]) for role in ROLES})
  out = {role: _reference_stats(*out[role], s.expert_fn[role].per_reference) for role in ROLES}
  t_mc = (time.time() - t1) / n_real
  records, coal_all = [], []
  for bi, row in enumerate(idx):
    rec, coal = _example_record(s, cfg, g, out, bi, int(row), start + bi)
    records.append(rec)
    coal_all.append(coal)
  # Pair-level masking in the full model (docs/method.md 5.5): one batched call.
  coal = np.stack(coal_all)  # [n_real, 2, n_b, 1 + 2 * reps, n]
  ml = pairs_lib.masked_logits_batch(
    s.mix_fn,
    {"state": s.state_full, "fills": s.fills},
    {k: g["batched"][k] for k in ("hs", "masks", "player_modality", "player_position")},
    jnp.asarray(_pad_rows(coal.reshape(n_real, -1, s.n_max), s.batch_size)),
    chunk=s.chunk,
  )
  masked = np.asarray(ml)[:n_real].reshape(*coal.shape[:4], -1)
  labels, logits = np.asarray(g["data"]["label"]), np.asarray(g["logits"])
  log(f"  {start + n_real}/{len(s.rows)} examples ({time.time() - t0:.0f}s)")
  return [
    {
      "record": records[bi],
      "clean_logits": logits[bi],
      "label": labels[bi],
      "masked": masked[bi],
      "t_mc": t_mc,
    }
    for bi in range(n_real)
  ]


def _example_record(s: _Setup, cfg: ProbeConfig, g: dict, out: dict, bi: int, row: int, ci: int):
  """One example's record (values and SEs of its pairs) and its pair-masking coalitions."""
  pm = g["pms"][bi]
  rec = {
    "row": row,
    "id": s.split.ids[row],
    "target": np.flatnonzero(g["target"][bi] > 0).tolist(),
    "p_clean": round_sig(g["p_clean"][bi]),
    "n_players": s.n_per_mod[ci].tolist(),
    # The gate weight of each probed expert at the clean input (1 for the mixture's game): calls
    # weigh an expert's score by it (`standout.is_call`).
    "gate": {role: round_sig(_gate_of(s, g["gate"][bi], role)) for role in ROLES},
  }
  scores = {}
  for role in ROLES:
    cp = g["cps"][role][bi]
    stats_all, ends_all = out[role]
    stats = {name: (mu[bi, : len(cp)], se[bi, : len(cp)]) for name, (mu, se) in stats_all.items()}
    if not all(np.isfinite(mu).all() and np.isfinite(se).all() for mu, se in stats.values()):
      raise ProbeError(f"{s.experts[role]} expert returned NaN/Inf on {cfg.split} row {row}")
    ends = ends_all[bi]
    scores[role] = (cp, stats)
    rec[role] = {
      "expert": s.experts[role],
      "members": [
        [int(pm.modality[i]), int(pm.position[i]), int(pm.modality[j]), int(pm.position[j])]
        for i, j in cp
      ],
      "players": cp.tolist(),
      "baseline_value": dict(zip(SCALES, round_sig(ends[0]))),
      "grand_value": dict(zip(SCALES, round_sig(ends[1]))),
      "values": {
        name: {sc: round_sig(mu[:, si]) for si, sc in enumerate(SCALES)}
        for name, (mu, _) in stats.items()
      },
      "std_errors": {
        name: {sc: round_sig(se[:, si]) for si, sc in enumerate(SCALES)}
        for name, (_, se) in stats.items()
      },
    }
  coal, counts_all = _masking_coalitions(
    scores,
    (cfg.sii_rank_score, cfg.rg_rank_score),
    g["pmods"][bi],
    int(g["n_valid"][bi]),
    s.p_max,
    cfg.mask_budgets,
    cfg.mask_repeats,
    np.random.default_rng([cfg.seed, row, 7]),
    len(s.cand),
  )
  rec["masking_unique_tokens"] = {name: c.tolist() for name, c in zip(("SII", "RG"), counts_all)}
  if s.planted is not None:
    rec["planted"] = planted_lib.planted_sample(s.planted, ci, pm, scores, rec["gate"])
  return rec, coal


def _gate_of(s: _Setup, weights: np.ndarray, role: str) -> float:
  """The gate weight [E] of the expert `role` probes; 1 for the mixture's game."""
  idx = expert_index(s.run.model, s.experts[role])
  return 1.0 if idx is None else float(weights[idx])


def _report(s: _Setup, cfg: ProbeConfig, workdir, done: list[dict], t0: float) -> dict:
  """The probe file's document from every example's results (`_probe_batch`)."""
  records = [d["record"] for d in done]
  clean_logits = np.stack([d["clean_logits"] for d in done])
  targets_np = np.stack(
    [np.asarray(jax.nn.one_hot(r["target"], clean_logits.shape[-1]).sum(0)) for r in records]
  )
  rank_scores = (cfg.sii_rank_score, cfg.rg_rank_score)
  masking_report = _masking_summary(
    s.fs.task.type,
    clean_logits,
    np.stack([d["label"] for d in done]),
    np.stack([d["masked"] for d in done]),  # [N, 2, n_b, 1 + 2 * reps, C]
    targets_np,
    list(cfg.mask_budgets),
    cfg.mask_repeats,
    records,
    rank_scores,
    s.experts,
  )
  # Expert evaluations = model passes: the marginal fill runs every coalition on K references.
  # Per pair: 4 coalitions per draw, and 3 for the full-input gap; per example the two endpoints.
  per_example = sum((s.n_draws * 4 * s.p_max + 3 * s.p_max + 2) * s.passes[r] for r in ROLES)
  t_mc = [d["t_mc"] for d in done]
  run = s.run
  report = {
    "format": PROBE_FORMAT,
    "version": PROBE_VERSION,
    "run": {
      "workdir": str(workdir),
      "seed": run.seed,
      "which": cfg.which,
      "checkpoint": {k: v for k, v in run.meta.items() if isinstance(v, (int, float, str))},
      "config_name": run.config.name,
      "store": str(s.fs.path),
      "model": type(run.model).__name__,
    },
    "split": cfg.split,
    "settings": _settings(s, cfg),
    "samples": records,
    "pair_masking": masking_report,
    "standout": round_tree(
      standout_lib.probe_standout(
        records,
        sii_scale=cfg.sii_rank_score,
        rg_scale=cfg.rg_rank_score,
        min_rate=cfg.standout_min_rate,
        min_effect=cfg.min_effect,
      )
    ),
    "timing": {
      "total_s": round(time.time() - t0, 2),
      "mc_s": round(sum(t_mc), 2),
      "expert_evaluations": int(per_example * len(records)),
      # Steady state: t_mc holds per-example averages of the batched calls, compilation excluded.
      "expert_evaluations_per_s": round(per_example / max(float(np.median(t_mc)), 1e-9)),
    },
  }
  if s.planted is not None:
    report["planted"] = planted_lib.planted_summary(s.planted, records, s.experts, cfg.min_effect)
  from flmoe_jax.data.evidence import evidence_for_store

  evidence = evidence_for_store(s.fs, cfg.split)
  if evidence is not None:
    from flmoe_jax.probes.evidence import pair_evidence

    report["evidence"] = round_tree(pair_evidence(report, evidence))
  return report


def _settings(s: _Setup, cfg: ProbeConfig) -> dict:
  """The report's `settings` block: the options as resolved for this run."""
  marginal = "marginal" in cfg.role_fill.values()
  return {
    "samples": len(s.rows),
    "budget": s.budget,
    "n_draws": s.n_draws,
    "pairs": cfg.pairs,
    "k": cfg.k,
    "n_random_pairs": cfg.n_random_pairs,
    "n_pairs_padded": s.p_max,
    "seed": cfg.seed,
    "antithetic": cfg.antithetic,
    "estimator": "monte-carlo-antithetic" if cfg.antithetic else "monte-carlo",
    "exact": False,
    "max_coalitions_per_call": s.chunk,
    "fill": cfg.fill,
    "fills": {"SII": cfg.role_fill["sii"], "RG": cfg.role_fill["rg"], "pair_masking": s.mask_fill},
    # Which indices' SEs include the draw of the marginal game's references.
    "se_includes_references": {
      {"sii": "SII", "rg": "RG"}[r]: [*PAIR_INDICES, "RG-full"]
      if s.expert_fn[r].per_reference
      else []
      for r in ROLES
    },
    "references": cfg.references if marginal else None,
    "reference_rows": None if s.reference_rows is None else s.reference_rows.tolist(),
    "target_source": cfg.target,
    "attribution": cfg.attribution if cfg.pairs == "topk" else None,
    "map_orders": cfg.map_orders if cfg.pairs == "topk" and cfg.attribution == "shapley" else None,
    "mask_budgets": list(cfg.mask_budgets),
    "mask_repeats": cfg.mask_repeats,
    "sii_rank_score": cfg.sii_rank_score,
    "rg_rank_score": cfg.rg_rank_score,
    "standout_min_rate": cfg.standout_min_rate,
    "min_effect": cfg.min_effect,
    "attention": s.run.config.model.attention,
    "indices": [*PAIR_INDICES, "RG-full"],
    "scales": list(SCALES),
    "experts": s.experts,
    "modalities": list(s.fs.modality_names),
    "kinds": list(s.run.kinds),
  }


def _stability(report: dict, cfg: ProbeConfig, workdir, seeds: Sequence[int], log) -> dict:
  """The same probe under a new MC seed and another training seed, and the rankings' agreement."""
  from flmoe_jax.probes import stability as stability_lib

  variants = {"monte_carlo": {"seed": cfg.seed + 1}}
  others = [s for s in seeds if s != report["run"]["seed"]]
  if others:
    variants["training_seed"] = {"run_seed": others[0]}
  out = {}
  for name, change in variants.items():
    suffix = "stability-mc" if name == "monte_carlo" else "stability-seed"
    again_cfg = cfg.replace(
      **change,
      tag=f"{cfg.tag}-{suffix}" if cfg.tag else suffix,
      figures=False,
      stability=False,
    )
    out[name] = stability_lib.compare(report, run_probe(again_cfg, workdir, log=log).to_dict())
  return out


# --------------------------------------------------------------------------------------------------
# Per-batch and per-example helpers.
# --------------------------------------------------------------------------------------------------


def _token_maps(
  s: _Setup, cfg: ProbeConfig, start: int, hs, masks, target
) -> dict[str, list[np.ndarray]]:
  """Per probe role, the per-modality token maps [B, T_m] that pre-select the `topk` tokens."""
  attribution = cfg.attribution
  if attribution in ("shapley", "grad_x_input"):  # maps of the role's own game
    out = {}
    for ri, role in enumerate(ROLES):
      params = {"state": s.expert_state[role], "hs": hs, "masks": masks, "target": target}
      if attribution == "grad_x_input":  # first-order: the masking fill
        maps = pairs_lib.token_attribution(s.expert_fn[role], {**params, "fills": s.fills})
      else:  # each token's |Shapley value| in the game, on the role's ranking scale
        scale = cfg.sii_rank_score if role == "sii" else cfg.rg_rank_score
        fn = dataclasses.replace(s.expert_fn[role], scores=(scale,), per_reference=False)
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), start), 17 + ri)
        chunk = max(1, s.role_chunk[role] // len(target))
        params["fills"] = s.role_fills[role]
        maps = pairs_lib.token_shapley(fn, params, key, n_orders=cfg.map_orders, chunk=chunk)
      out[role] = [np.asarray(a) for a in maps]
    return out
  from flmoe_jax.explain import attribute  # the explanation pipeline's maps (docs/method.md 5.4)

  views = list(dict.fromkeys(s.experts[r] for r in ROLES))
  attr = attribute(
    s.run.model,
    (hs, masks),
    method=attribution,
    expert=views,
    target=target,
    kinds=s.run.kinds,
    task_type=s.fs.task.type,
    means=s.fs.means(),
  )
  return {role: [np.asarray(a) for a in attr.view(s.experts[role])] for role in ROLES}


def _masking_coalitions(
  scores, rank_scales, pmod, n_valid, p_max, budgets, repeats, rng, m_count
) -> tuple[np.ndarray, list[np.ndarray]]:
  """Kept-player coalitions [2, n_b, 1 + 2 * repeats, n] of SII- and RG-ranked pair masking."""
  coal_all, counts_all = [], []
  for role, name, scale in zip(ROLES, ("SII", "RG"), rank_scales):
    cp, stats = scores[role]
    order = np.argsort(-stats[name][0][:, SCALES.index(scale)], kind="stable")
    padded, _ = pairs_lib.pad_pairs(cp, p_max)
    coal, counts = pairs_lib.masking_coalitions(
      pmod, n_valid, padded, order, budgets, repeats, rng, m_count
    )
    coal_all.append(coal)
    counts_all.append(counts)
  return np.stack(coal_all), counts_all


# --------------------------------------------------------------------------------------------------
# Pair masking summary.
# --------------------------------------------------------------------------------------------------


def _masking_summary(
  task, clean_logits, labels, masked, target, budgets, repeats, records, rank_scores, experts
) -> dict:
  """Drops in target probability and task metric vs budget: ranked pairs vs two random controls.

  `masked` [N, 2, n_b, 1 + 2 * repeats, C]: per example, index (SII, RG) and budget, the logits
  with the ranked pairs masked, then `repeats` draws of each control (`pairs.masking_coalitions`).
  The matched control is the one the ranking is tested against (`significance.beats_control`).
  """
  metric_name = metrics_lib.default_selection_metric(task)
  p_clean = np.asarray(
    targets.target_score(jnp.asarray(clean_logits), jnp.asarray(target), task, score="prob")
  )
  p_masked = np.asarray(
    targets.target_score(
      jnp.asarray(masked), jnp.asarray(target[:, None, None, None, :]), task, score="prob"
    )
  )  # [N, 2, n_b, 1 + 2 * reps]
  drop = p_clean[:, None, None, None] - p_masked
  clean_metric = metrics_lib.compute_metrics(task, clean_logits, labels)[metric_name]
  n = int(len(p_clean))
  out = {
    "budgets": budgets,
    "repeats": repeats,
    "metric": metric_name,
    "clean_metric": clean_metric,
    "clean_prob": float(p_clean.mean()),
    "n": n,
    "controls": dict(_CONTROLS),
    "test": significance.TEST_NAME,
    "alpha": significance.DEFAULT_ALPHA,
    "min_examples": significance.MIN_EXAMPLES,
  }

  def metric(logits):
    return metrics_lib.compute_metrics(task, logits, labels)[metric_name]

  def drops(d):  # [N, n_b] per-example drops -> mean and SE per budget
    se = d.std(0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(d.shape[1])
    return {"prob_drop": round_sig(d.mean(0)), "prob_drop_se": round_sig(se)}

  ranked_drop = drop[:, :, :, 0]  # [N, 2, n_b]
  # Per-example mean over a control's repeats first (docs/method.md 4.2).
  control_slices = {"random": slice(1, 1 + repeats), "random_all": slice(1 + repeats, None)}
  control_drop = {c: drop[:, :, :, sl].mean(-1) for c, sl in control_slices.items()}
  tests = {c: significance.beats_control(ranked_drop, d) for c, d in control_drop.items()}
  for ri, (name, role) in enumerate((("SII", "sii"), ("RG", "rg"))):
    m_ranked = [metric(masked[:, ri, b, 0]) for b in range(len(budgets))]
    block = {
      "expert": experts[role],
      "rank_score": rank_scores[ri],
      "ranked": {
        **drops(ranked_drop[:, ri]),
        "metric": round_sig(m_ranked),
        "metric_drop": round_sig(clean_metric - np.asarray(m_ranked)),
      },
    }
    for c, sl in control_slices.items():
      reps = range(sl.start, sl.start + repeats)
      m_rand = np.array([[metric(masked[:, ri, b, r]) for r in reps] for b in range(len(budgets))])
      block[c] = {
        **drops(control_drop[c][:, ri]),
        "metric": round_sig(m_rand.mean(1)),
        "metric_std": round_sig(m_rand.std(1)),
        "metric_drop": round_sig(clean_metric - m_rand.mean(1)),
        **{k: round_sig(v) if k != "beats" else v for k, v in tests[c][ri].items()},
      }
    tokens = np.array([r["masking_unique_tokens"][name] for r in records])  # [N, n_b, M]
    block["mean_unique_tokens"] = round_sig(tokens.mean(0))
    out[name] = block
  return out
