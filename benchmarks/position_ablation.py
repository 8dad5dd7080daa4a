"""Why does the dense transformer not learn the planted XOR at 48 tokens x 49 patches? (prints JSON)

A deliberately small, self-contained replica of the library's dense expert (per-modality linear
projection -> positions -> pre-LN Transformer layers -> per-modality masked mean -> linear head;
hidden 32, 2 heads, 2 layers, Adam 2e-3 constant, batch 64, no dropout), written so that mechanisms
the library does not implement can be swapped in and measured on the ladder's stores
(`benchmarks/ground_truth_ladder.py`):

  --pos sin | learned | rope | rope+sin   sinusoidal table added (the paper's), a learned table
                                          drawn from N(0, 1), rotary q/k, or both
  --pool mean | map                       masked mean, or attention pooling with a learned query
  --head linear | mlp                     the head on the pooled features
  --aug SIGMA                             Gaussian noise added to the input features when training
  --svd                                   no training: the top singular vectors of the label-weighted
                                          text x image cross-moment of the flattened features (a
                                          second-order estimator) and the positions they point at

One JSON line per run: test accuracy after every epoch, final training loss, seconds. At L2 it
reproduces the library's dense plateau (XOR learnt at epoch 5-6 with 5,000 examples). Results are in
docs/ground_truth.md section 5. Not a test: a measurement.

  python benchmarks/position_ablation.py --rung L3 --pos learned --epochs 20
  python benchmarks/position_ablation.py --rung L3 --svd
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from ground_truth_ladder import build_store  # noqa: E402

from flmoe_jax.data.store import open_store  # noqa: E402


def load(store: pathlib.Path, split: str):
  s = open_store(store).split(split)
  xs = [np.asarray(x, np.float32) for x in s.features]
  ms = [np.asarray(m, bool) for m in s.masks]
  return xs, ms, np.asarray(s.labels)


def svd_probe(store: pathlib.Path) -> dict:
  """Top singular directions of E[y x_text x_image^T] over flattened (position x dim) features."""
  (xt, xv), (mt, mv), y = load(store, "train")
  xt, xv = xt * mt[..., None], xv * mv[..., None]
  xt, xv = xt - xt.mean(0), xv - xv.mean(0)
  sign = 2.0 * y - 1.0
  m = np.einsum("n,ni,nj->ij", sign, xt.reshape(len(y), -1), xv.reshape(len(y), -1)) / len(y)
  u, s, vt = np.linalg.svd(m, full_matrices=False)
  d = xt.shape[2]
  text_mass = np.abs(u[:, 0]).reshape(-1, d).sum(1)
  image_mass = np.abs(vt[0]).reshape(-1, d).sum(1)
  planted = json.loads((store / "ground_truth.json").read_text())["planted_pairs"]
  syn = next(p for p in planted if p["kind"] == "synergy")
  return {
    "singular_values": np.round(s[:4], 2).tolist(),
    "text_position": int(text_mass.argmax()),
    "image_position": int(image_mass.argmax()),
    "planted": [syn["text_pos"], syn["image_pos"]],
  }


def sin_table(length: int, dim: int) -> np.ndarray:
  pos = np.arange(length)[:, None]
  i = np.arange(dim)[None]
  ang = pos / np.power(10000.0, (2 * (i // 2)) / dim)
  return np.where(i % 2 == 0, np.sin(ang), np.cos(ang)).astype(np.float32)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--rung", default="L3")
  p.add_argument("--setting", default="synergy")
  p.add_argument("--n", type=int, default=5000, help="training examples")
  p.add_argument("--pos", default="sin", choices=("sin", "learned", "rope", "rope+sin"))
  p.add_argument("--pool", default="mean", choices=("mean", "map"))
  p.add_argument("--head", default="linear", choices=("linear", "mlp"))
  p.add_argument("--aug", type=float, default=0.0)
  p.add_argument("--epochs", type=int, default=20)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--hidden", type=int, default=32)
  p.add_argument("--heads", type=int, default=2)
  p.add_argument("--lr", type=float, default=2e-3)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--svd", action="store_true")
  p.add_argument("--root", type=pathlib.Path, default=pathlib.Path("runs/ladder"))
  a = p.parse_args()
  store = build_store(a.root, a.rung, a.setting, a.n, 0)
  if a.svd:
    print(json.dumps({"rung": a.rung, "n": a.n, **svd_probe(store)}))
    return

  (xt_tr, xv_tr), (mt_tr, mv_tr), y_tr = load(store, "train")
  test = load(store, "test")
  t_len, d = xt_tr.shape[1], xt_tr.shape[2]
  length = t_len + xv_tr.shape[1]
  h, nh = a.hidden, a.heads
  hd = h // nh
  sin = jnp.asarray(sin_table(length, h))
  inv = 1.0 / (10000 ** (np.arange(0, hd, 2) / hd))
  ang = np.arange(length)[:, None] * inv[None]
  cos_r, sin_r = jnp.asarray(np.cos(ang), jnp.float32), jnp.asarray(np.sin(ang), jnp.float32)

  def rope(x):  # [B, L, heads, hd]
    x1, x2 = x[..., ::2], x[..., 1::2]
    c, s = cos_r[None, :, None], sin_r[None, :, None]
    return jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], -1).reshape(x.shape)

  def init(key):
    ks = iter(jax.random.split(key, 64))

    def u(shape, fan):  # PyTorch Linear's uniform(-1/sqrt(fan), 1/sqrt(fan))
      return jax.random.uniform(next(ks), shape, minval=-1, maxval=1) / np.sqrt(fan)

    prm = {
      "proj": [u((d, h), d), u((d, h), d)],
      "proj_b": [jnp.zeros(h), jnp.zeros(h)],
      "head": u((2 * h, 2), 2 * h),
      "head_b": jnp.zeros(2),
      "mlp_head": u((2 * h, 4 * h), 2 * h),
      "mlp_head_b": jnp.zeros(4 * h),
      "mlp_out": u((4 * h, 2), 4 * h),
      "query": [jnp.zeros((nh, hd)), jnp.zeros((nh, hd))],
      "pool_k": u((h, h), h),
      "pool_v": u((h, h), h),
      "pe": jax.random.normal(next(ks), (length, h)),
      "layers": [],
    }
    for _ in range(a.layers):
      prm["layers"].append(
        {
          "qkv": u((h, 3 * h), h),
          "qkv_b": jnp.zeros(3 * h),
          "o": u((h, h), h),
          "o_b": jnp.zeros(h),
          "m1": u((h, 2 * h), h),
          "m1_b": jnp.zeros(2 * h),
          "m2": u((2 * h, h), 2 * h),
          "m2_b": jnp.zeros(h),
          "ln": [jnp.ones(h), jnp.zeros(h), jnp.ones(h), jnp.zeros(h)],
        }
      )
    return prm

  def ln(x, g, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / jnp.sqrt(v + 1e-5) * g + b

  def pool(prm, x, mask, q):
    if a.pool == "mean":
      return (x * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1)
    k = (x @ prm["pool_k"]).reshape(*x.shape[:2], nh, hd)
    v = (x @ prm["pool_v"]).reshape(*x.shape[:2], nh, hd)
    s = jnp.where(mask[:, None], jnp.einsum("blhd,hd->bhl", k, q) / np.sqrt(hd), -1e9)
    return jnp.einsum("bhl,blhd->bhd", jax.nn.softmax(s, -1), v).reshape(len(x), h)

  def forward(prm, xt, xv, mt, mv):
    x = jnp.concatenate([xt @ prm["proj"][0] + prm["proj_b"][0], xv @ prm["proj"][1]], 1)
    x = x.at[:, t_len:].add(prm["proj_b"][1])
    mask = jnp.concatenate([mt, mv], 1)
    if a.pos in ("sin", "rope+sin"):
      x = x + sin
    if a.pos == "learned":
      x = x + prm["pe"]
    x = x * mask[..., None]
    for lp in prm["layers"]:
      g1, b1, g2, b2 = lp["ln"]
      qkv = ln(x, g1, b1) @ lp["qkv"] + lp["qkv_b"]
      q, k, v = [t.reshape(*t.shape[:2], nh, hd) for t in jnp.split(qkv, 3, -1)]
      if a.pos.startswith("rope"):
        q, k = rope(q), rope(k)
      s = jnp.einsum("blhd,bmhd->bhlm", q, k) / np.sqrt(hd)
      s = jnp.where(mask[:, None, None, :], s, -1e9)
      o = jnp.einsum("bhlm,bmhd->blhd", jax.nn.softmax(s, -1), v).reshape(x.shape)
      x = x + o @ lp["o"] + lp["o_b"]
      x = x + jax.nn.gelu(ln(x, g2, b2) @ lp["m1"] + lp["m1_b"]) @ lp["m2"] + lp["m2_b"]
    lat = jnp.concatenate(
      [pool(prm, x[:, :t_len], mt, prm["query"][0]), pool(prm, x[:, t_len:], mv, prm["query"][1])],
      -1,
    )
    if a.head == "mlp":
      return jax.nn.gelu(lat @ prm["mlp_head"] + prm["mlp_head_b"]) @ prm["mlp_out"] + prm["head_b"]
    return lat @ prm["head"] + prm["head_b"]

  def loss(prm, batch, key):
    xt, xv, mt, mv, y = batch
    if a.aug:
      k1, k2 = jax.random.split(key)
      xt = xt + a.aug * jax.random.normal(k1, xt.shape)
      xv = xv + a.aug * jax.random.normal(k2, xv.shape)
    logits = forward(prm, xt, xv, mt, mv)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  tx = optax.adam(a.lr)
  prm = init(jax.random.key(a.seed))
  opt = tx.init(prm)

  @jax.jit
  def step(prm, opt, batch, key):
    value, grads = jax.value_and_grad(loss)(prm, batch, key)
    updates, opt = tx.update(grads, opt, prm)
    return optax.apply_updates(prm, updates), opt, value

  @jax.jit
  def accuracy(prm, xt, xv, mt, mv, y):
    return (forward(prm, xt, xv, mt, mv).argmax(-1) == y).mean()

  n = len(y_tr)
  rng = np.random.default_rng(a.seed)
  key = jax.random.key(a.seed + 1)
  t0, history, losses = time.perf_counter(), [], []
  for _ in range(a.epochs):
    perm, losses = rng.permutation(n), []
    for i in range(0, n - a.batch + 1, a.batch):
      idx = perm[i : i + a.batch]
      key, sub = jax.random.split(key)
      batch = (xt_tr[idx], xv_tr[idx], mt_tr[idx], mv_tr[idx], y_tr[idx])
      prm, opt, value = step(prm, opt, batch, sub)
      losses.append(float(value))
    (xt, xv), (mt, mv), y = test
    history.append(round(float(accuracy(prm, xt, xv, mt, mv, y)), 3))
  out = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(a).items()}
  out.update(
    test_accuracy_by_epoch=history,
    final_train_loss=round(float(np.mean(losses)), 3),
    seconds=round(time.perf_counter() - t0),
  )
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
