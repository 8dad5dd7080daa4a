"""The frozen encoders alone, ours against Hugging Face PyTorch in one process, with equal weights.

Builds one encoder architecture with random weights (speed does not depend on the values; no
weights are downloaded), runs it through `transformers`' Flax class under `jax.jit` with each
attention implementation asked for (`einsum`: the class's own code; `xla` / `cudnn`: fused,
flmoe_jax/features/fused_attention.py), and, when torch is installed, through the PyTorch class
(`attn_implementation="sdpa"`) holding the same weights, on the same device. Prints one JSON object:
samples/s of each (median call time over --calls calls after a warm-up call), the ratio of each of
ours to PyTorch, and the largest difference of the features from our einsum path (the equality check;
tolerance in the output).

  python benchmarks/encoder_bench.py --model roberta-base --seq-len 320 --batch-size 64 --bf16 \\
      --attention einsum,xla,cudnn --torch                                         # GPU
  python benchmarks/encoder_bench.py --model clip-vit-b16 --batch-size 64 --bf16 \\
      --attention einsum,xla,cudnn --torch                                         # GPU
  python benchmarks/encoder_bench.py --model roberta-base --layers 2 --seq-len 64 --batch-size 4 \\
      --calls 3 --attention einsum,xla --torch                                     # CPU check

Models: `roberta-base` (RoBERTa-base: 12 layers, hidden 768; all --seq-len tokens real),
`clip-vit-b16` (the CLIP ViT-B/16 vision tower: 224 px, 196 patches + CLS), `minilm` (the bundled
real MiniLM-L6 weights). `--layers` shortens the stack (a quick check on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# JAX and PyTorch share the accelerator: JAX must not reserve most of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from flmoe_jax.features import fused_attention  # noqa: E402
from flmoe_jax.features.encoders import minilm_path  # noqa: E402


def build(name: str, layers: int | None, dtype):
  """(Flax model, its config, input kind) of `name` with random weights (seed 0), or MiniLM's."""
  from transformers import (
    CLIPVisionConfig,
    FlaxBertModel,
    FlaxCLIPVisionModel,
    FlaxRobertaModel,
    RobertaConfig,
  )

  extra = {} if layers is None else {"num_hidden_layers": layers}
  if name == "roberta-base":
    return FlaxRobertaModel(RobertaConfig(**extra), seed=0, dtype=dtype), "text"
  if name == "clip-vit-b16":
    vit_b16 = dict(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12)
    cfg = CLIPVisionConfig(**{**vit_b16, **extra}, num_attention_heads=12, intermediate_size=3072)
    return FlaxCLIPVisionModel(cfg, seed=0, dtype=dtype), "image"
  if name == "minilm":
    return FlaxBertModel.from_pretrained(minilm_path(), dtype=dtype, **extra), "text"
  raise SystemExit(f"--model {name!r} must be roberta-base, clip-vit-b16 or minilm")


def inputs(model, kind: str, batch: int, seq_len: int) -> dict:
  rng = np.random.default_rng(0)
  if kind == "text":
    ids = rng.integers(5, model.config.vocab_size, size=(batch, seq_len)).astype(np.int32)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}
  size = model.config.image_size
  return {"pixel_values": rng.normal(size=(batch, 3, size, size)).astype(np.float32)}


def median_call(fn, calls: int, sync) -> float:
  """Median seconds of `calls` calls of fn after one warm-up call; `sync` waits for the result."""
  sync(fn())
  times = []
  for _ in range(calls):
    t = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def run_jax(model, x: dict, attention: str, calls: int):
  def apply(params, x):
    with fused_attention.fused(attention):
      return model(**x, params=params, train=False).last_hidden_state

  fn = jax.jit(apply)
  params = jax.device_put(model.params)
  xd = jax.device_put(x)
  seconds = median_call(lambda: fn(params, xd), calls, jax.block_until_ready)
  return seconds, np.asarray(fn(params, xd), np.float32)


def run_torch(model, kind: str, x: dict, dtype: str, calls: int):
  """The PyTorch class of the same architecture, the Flax weights loaded into it, sdpa attention."""
  import torch
  import transformers
  from transformers.modeling_flax_pytorch_utils import load_flax_weights_in_pytorch_model

  cls = getattr(transformers, type(model).__name__.removeprefix("Flax"))
  pt = cls._from_config(model.config, attn_implementation="sdpa")
  pt = load_flax_weights_in_pytorch_model(pt, model.params)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  pt = pt.to(device=device, dtype=getattr(torch, dtype)).eval()
  xt = {k: torch.from_numpy(v).to(device) for k, v in x.items()}
  if "pixel_values" in xt:
    xt["pixel_values"] = xt["pixel_values"].to(getattr(torch, dtype))

  def sync(out):
    if device == "cuda":
      torch.cuda.synchronize()
    return out

  with torch.inference_mode():
    seconds = median_call(lambda: pt(**xt).last_hidden_state, calls, sync)
    out = pt(**xt).last_hidden_state.float().cpu().numpy()
  return seconds, out, {"torch": torch.__version__, "device": device, "attention": "sdpa"}


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--model", default="roberta-base")
  p.add_argument(
    "--layers", type=int, default=None, help="transformer layers (default: the model's)"
  )
  p.add_argument("--seq-len", type=int, default=320, help="text tokens")
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--bf16", action="store_true", help="bfloat16 compute (default float32)")
  p.add_argument("--attention", default="einsum,xla", help="ours: einsum, xla, cudnn (comma list)")
  p.add_argument("--torch", action="store_true", help="also HF PyTorch, side by side")
  p.add_argument("--calls", type=int, default=20)
  args = p.parse_args(argv)
  dtype = "bfloat16" if args.bf16 else "float32"
  model, kind = build(args.model, args.layers, jnp.dtype(dtype))
  x = inputs(model, kind, args.batch_size, args.seq_len)
  # Differences are stated relative to the largest feature; bf16 carries about 3 significant digits.
  tol = 5e-2 if args.bf16 else 1e-4
  out = {
    "benchmark": "encoder",
    "model": args.model,
    "layers": model.config.num_hidden_layers,
    "weights": "bundled MiniLM-L6" if args.model == "minilm" else "random (seed 0)",
    "device": jax.devices()[0].device_kind,
    "backend": jax.default_backend(),
    "jax": jax.__version__,
    "dtype": dtype,
    "batch_size": args.batch_size,
    "tokens": args.seq_len if kind == "text" else (model.config.image_size // 16) ** 2 + 1,
    "timing": f"median of {args.calls} calls after one warm-up call",
    "relative_tolerance": tol,
    "ours": {},
  }
  ref = None
  for attention in args.attention.split(","):
    try:
      seconds, feats = run_jax(model, x, attention, args.calls)
    except Exception as e:  # noqa: BLE001 - e.g. cudnn on a CPU: recorded, the others still run
      out["ours"][attention] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
      continue
    ref = feats if ref is None else ref
    scale = float(np.abs(ref).max())
    out["ours"][attention] = {
      "samples_per_s": round(args.batch_size / seconds, 2),
      "max_rel_diff_vs_first": float(np.abs(feats - ref).max()) / scale,
    }
  if args.torch:
    seconds, feats, info = run_torch(model, kind, x, dtype, args.calls)
    rate = args.batch_size / seconds
    out["hf_pytorch"] = {"samples_per_s": round(rate, 2), **info}
    if ref is not None:
      out["hf_pytorch"]["max_rel_diff_vs_first"] = float(np.abs(feats - ref).max()) / float(
        np.abs(ref).max()
      )
    out["ratio_vs_pytorch"] = {
      a: round(r["samples_per_s"] / rate, 3) for a, r in out["ours"].items() if "samples_per_s" in r
    }
  print(json.dumps(out, indent=1))
  return out


if __name__ == "__main__":
  main()
