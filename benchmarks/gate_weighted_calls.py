"""How do the probes' calls change when each expert's score is weighed by its gate weight? (prints JSON)

Probe files written before format 4 hold every score the calls need but not the gate weights. This
reads such a file, computes each probed example's gate weights at its clean input (one forward pass
of the probed run's model: the same numbers `flmoe probe` now records), and applies the call rule
with and without them (`flmoe_jax.probes.standout.is_call`): per planted pair its `called@1` under the
probe meant to find it and its cross-talk `called@1`, and the pairs standing out by calls across
examples (`dataset_called`). One JSON line per run directory.

  python benchmarks/gate_weighted_calls.py runs/ladder/runs/L2_uniq_text_n5000_ra1_fl_i2moe_s0

Not a test: a measurement. Nothing is written; the probe files are only read.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax.numpy as jnp
import numpy as np

from flmoe_jax import runs
from flmoe_jax.errors import ProbeError
from flmoe_jax.probes import planted as planted_lib
from flmoe_jax.probes import standout as standout_lib
from flmoe_jax.probes.results import ProbeReport


def _gates(run, rows: np.ndarray, experts: dict[str, str], split: str) -> np.ndarray:
  """Gate weights [N, 2] of the experts the two roles probe, at the examples' clean inputs."""
  data = run.store.gather(split, rows)
  xs = [jnp.asarray(x, jnp.float32) for x in data["x"]]
  weights = np.asarray(run.model.forward_projected(run.model.project(xs), data["mask"]).weights)
  names = list(run.model.expert_names)
  cols = [names.index(experts[role]) if experts[role] in names else None for role in ("sii", "rg")]
  return np.stack([weights[:, c] if c is not None else np.ones(len(rows)) for c in cols], 1)


def _readings(report: ProbeReport, samples: list[dict], planted: dict | None) -> dict:
  """Planted pairs' calls and the standouts by calls of one set of records."""
  cfg = report.settings
  out = {}
  if planted is not None:
    summary = planted_lib.planted_summary(
      planted, samples, dict(cfg.experts), float(cfg.min_effect)
    )
    out["planted"] = {
      name: {
        "called@1": p["logodds"].get("called@1"),
        "cross_talk_called@1": (p.get("cross_talk") or {}).get("called@1"),
      }
      for name, p in summary["pairs"].items()
    }
  standout = standout_lib.probe_standout(
    samples,
    sii_scale=cfg.sii_rank_score,
    rg_scale=cfg.rg_rank_score,
    min_rate=float(cfg.standout_min_rate),
    min_effect=float(cfg.min_effect),
  )
  out["called_standouts"] = {
    index: [
      {"pair": q["pair"], "rate": q["rate"]}
      for q in standout[index]["dataset_called"]["pairs"]
      if q["stands_out"]
    ]
    for index in ("SII", "RG")
  }
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("workdirs", nargs="+", type=pathlib.Path)
  ap.add_argument("--split", default="test")
  ap.add_argument("--tag", default="")
  args = ap.parse_args()
  for wd in args.workdirs:
    path = wd / "probe" / (f"{args.split}_{args.tag}" if args.tag else args.split)
    try:
      report = ProbeReport.load(path.with_suffix(".json"))
    except ProbeError as e:  # e.g. a format-1 file: its scores are not the ones the calls read
      print(json.dumps({"run": str(wd), "error": str(e)}), flush=True)
      continue
    run = runs.load_run(wd, seed=report.run.seed, which=report.run.which)
    samples = [dict(r) for r in report.samples]
    rows = np.array([r["row"] for r in samples])
    gates = _gates(run, rows, dict(report.settings.experts), args.split)
    gt = run.store.ground_truth()
    planted = planted_lib.planted_setup(gt, run.store, args.split, rows) if gt else None
    before = _readings(
      report, [{k: v for k, v in r.items() if k != "gate"} for r in samples], planted
    )
    weighted = []
    for r, (w_sii, w_rg) in zip(samples, gates):
      gate = {"sii": float(w_sii), "rg": float(w_rg)}
      entries = {name: {**e, "gate": gate} for name, e in (r.get("planted") or {}).items()}
      weighted.append({**r, "gate": gate, **({"planted": entries} if entries else {})})
    after = _readings(report, weighted, planted)
    print(
      json.dumps(
        {
          "run": str(wd),
          "examples": len(samples),
          "gate_mean": {"sii": float(gates[:, 0].mean()), "rg": float(gates[:, 1].mean())},
          "unweighted": before,
          "gate_weighted": after,
        }
      ),
      flush=True,
    )


if __name__ == "__main__":
  main()
