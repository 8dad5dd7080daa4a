"""Which channel of a trained FL-I2MoE carries a planted XOR: an expert, or the gate's routing?

The mixture's evidence for the positive class is z = sum_e w_e d_e (w_e the gate weight of expert e,
d_e its logit difference, class 1 minus class 0). The gate reads every modality, so a gate that routes
by one modality's bit between experts that read the other's can compute an interaction without any
expert computing one. This script measures, on a synthetic store's split, the XOR contrast of the
planted synergy pair, C(f) = (f(+,+) - f(+,-) - f(-,+) + f(-,-)) / 4 with f(b_text, b_image) the mean of
f over the examples in that bit state (log-odds, nats), for z and for each expert's share w_e d_e,
split into the expert's own part C(mean(w_e) d_e) and the rest, the gate's part. Other planted bits
are independent of the pair's, so they average out of C.

  python benchmarks/xor_channels.py --workdir runs/ladder/runs/NAME --seeds 0,1 [--split test]

Prints one JSON line per seed.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def contrast(f: np.ndarray, bt: np.ndarray, bv: np.ndarray) -> float:
  """XOR contrast of per-example values f [N] over the bit states of the pair (+-1 bits [N])."""
  cell = {(s, t): f[(bt == s) & (bv == t)].mean() for s in (1, -1) for t in (1, -1)}
  return float((cell[1, 1] - cell[1, -1] - cell[-1, 1] + cell[-1, -1]) / 4)


def channels(workdir: str, seed: int, split: str, pair: int) -> dict:
  """The XOR contrast of the mixture and of each expert's share, for one seed of a run."""
  import jax.numpy as jnp

  from flmoe_jax.runs import load_run

  run = load_run(workdir, seed=seed)
  fs = run.store
  bits = fs.planted_bits(split)
  if bits is None or f"syn{pair}_text" not in bits:
    raise SystemExit(
      f"{fs.path}: no planted synergy pair {pair} (a synthetic store with one is needed)"
    )
  if fs.task.type != "binary":
    raise SystemExit(f"{fs.path}: task {fs.task.type!r}; this script reads binary stores")
  bt, bv = (np.asarray(bits[f"syn{pair}_{m}"]) for m in ("text", "image"))
  n = len(bt)
  out = {"z": [], "d": [], "w": [], "label": []}
  for start in range(0, n, 256):
    batch = fs.gather(split, np.arange(start, min(start + 256, n)))
    res = run.model([jnp.asarray(x) for x in batch["x"]], [jnp.asarray(m) for m in batch["mask"]])
    logits, expert = np.asarray(res.logits), np.asarray(res.expert_logits)  # [B, C], [B, E, C]
    if logits.shape[-1] == 1:
      out["z"].append(logits[:, 0])
      out["d"].append(expert[..., 0])
    else:
      out["z"].append(logits[:, 1] - logits[:, 0])
      out["d"].append(expert[..., 1] - expert[..., 0])
    out["w"].append(np.asarray(res.weights))
    out["label"].append(np.asarray(batch["label"]).reshape(len(logits), -1)[:, -1])
  z, d, w = (np.concatenate(out[k]) for k in ("z", "d", "w"))
  label = np.concatenate(out["label"])
  names = [*(f"uni_{m}" for m in fs.modality_names), "syn", "red"][: d.shape[1]]
  experts = {}
  for e, name in enumerate(names):
    share = contrast(w[:, e] * d[:, e], bt, bv)
    own = contrast(w[:, e].mean() * d[:, e], bt, bv)
    experts[name] = {
      "mean_weight": round(float(w[:, e].mean()), 4),
      "share": round(share, 4),
      "expert_part": round(own, 4),
      "gate_part": round(share - own, 4),
      "weight_by_state": {
        f"{s:+d}{t:+d}": round(float(w[(bt == s) & (bv == t), e].mean()), 3)
        for s in (1, -1)
        for t in (1, -1)
      },
    }
  return {
    "workdir": workdir,
    "seed": seed,
    "split": split,
    "n": n,
    "accuracy": round(float(((z > 0).astype(int) == label).mean()), 4),
    "mixture_contrast": round(contrast(z, bt, bv), 4),
    "scale": "log-odds of the positive class (nats); contrast C = (f++ - f+- - f-+ + f--) / 4",
    "experts": experts,
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--seeds", default="0")
  p.add_argument("--split", default="test")
  p.add_argument("--pair", type=int, default=0, help="planted synergy pair index")
  args = p.parse_args()
  for seed in (int(s) for s in args.seeds.split(",")):
    print(json.dumps(channels(args.workdir, seed, args.split, args.pair)), flush=True)


if __name__ == "__main__":
  main()
