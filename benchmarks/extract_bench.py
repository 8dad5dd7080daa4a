"""Feature-extraction throughput: MiniLM text (real weights) and a ViT-B/16-shaped image tower.

Prints one JSON object:

  {"device": ..., "backend": ..., "num_devices": ..., "batch_size": ..., "compute_dtype": ...,
   "text":  {"encoder", "max_len", "encode_samples_per_s", "extract_samples_per_s", ...},
   "image": {"encoder", "image_size", "patches", "encode_samples_per_s",
             "extract_samples_per_s", ...}}

* `encode_samples_per_s`: the jitted encoder alone on a batch already on the devices (compiled
  first).
* `extract_samples_per_s`: `extract_features` end to end on a synthetic raw set (tokenising /
  decoding and resizing 256 px images, sharding, device compute, fetching, chunk files, store
  assembly), measured on a second run after a warm-up run compiled every shape;
  `extract_timing_s` says where its encoding loop waited (`ExtractionTiming`: for host batches,
  for the devices, writing; and the producer thread's preparation time).

The image tower has the configuration of CLIP ViT-B/16 (hidden 768, 12 layers, 12 heads, 224 px,
patch 16 -> 196 patches) with random weights: speed does not depend on the values, and no CLIP
weights ship offline.

  python benchmarks/extract_bench.py              # CPU: 2 batches per encoder, under 2 minutes
  python benchmarks/extract_bench.py --batch-size 128 --bf16 --batches 20          # GPU
  python benchmarks/extract_bench.py --batch-size 128 --bf16 --attention cudnn      # GPU, fused
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

from flmoe_jax.data.raw.base import RawDataset, RawExample, RawModality  # noqa: E402
from flmoe_jax.data.store import TaskSpec  # noqa: E402
from flmoe_jax.features import encoders, extract  # noqa: E402

WORDS = (
  "the a movie story of young man woman who finds love war city family secret life world and in "
  "to his her with from after before must discover"
).split()


def random_vit_b16(dtype, folder: str, attention: str = "einsum") -> encoders.ImageEncoder:
  """An ImageEncoder with the architecture of CLIP ViT-B/16 and random weights (seed 0).

  The encoder is written to `folder` (which must not exist) and loaded back, as a downloaded
  checkpoint would be; its processor is the CLIP one (224 px shortest edge, centre crop, CLIP
  mean/std).
  """
  path = encoders.save_random_image_encoder(
    folder,
    arch="clip",
    image_size=224,
    patch_size=16,
    hidden_size=768,
    num_layers=12,
    num_heads=12,
    intermediate_size=3072,
    seed=0,
  )
  return encoders.load_encoder("image", path, dtype=dtype, attention=attention)


def time_encode(enc, batch: dict, mesh, repeats: int) -> float:
  """Samples/s of the jitted encoder on a device-resident sharded batch (after one compile call)."""
  data = {
    k: jax.device_put(v, NamedSharding(mesh, PartitionSpec("data", *([None] * (v.ndim - 1)))))
    for k, v in batch.items()
  }
  params = jax.device_put(enc.params, NamedSharding(mesh, PartitionSpec()))
  jax.block_until_ready(enc.encode(data, params, out_dtype="float16"))
  t = time.perf_counter()
  for _ in range(repeats):
    out = enc.encode(data, params, out_dtype="float16")
  jax.block_until_ready(out)
  return repeats * len(next(iter(batch.values()))) / (time.perf_counter() - t)


def time_extract(raw_fn, tmp: str, **kwargs) -> tuple[float, dict]:
  """Samples/s of extract_features on raw_fn(None) examples, after a warm-up run that compiles every
  shape, and where its encoding loop spent the time (`ExtractionTiming`, seconds)."""
  warm = raw_fn(kwargs["options"].batch_size)
  extract.extract_features(warm, os.path.join(tmp, "warm"), progress=False, **kwargs)
  raw = raw_fn(None)
  n = sum(len(v) for v in raw.splits.values())
  timing = extract.ExtractionTiming()
  t = time.perf_counter()
  extract.extract_features(raw, os.path.join(tmp, "timed"), progress=False, timing=timing, **kwargs)
  rate = n / (time.perf_counter() - t)
  return rate, {k: round(v, 3) for k, v in dataclasses.asdict(timing).items()}


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument(
    "--batches", type=int, default=None, help="timed batches (default 2 on CPU, 20 otherwise)"
  )
  p.add_argument("--bf16", action="store_true", help="bfloat16 compute")
  p.add_argument(
    "--text-len", type=int, default=128, help="tokens per text (= max_len and the bucket)"
  )
  p.add_argument("--which", choices=("text", "image", "both"), default="both")
  p.add_argument(
    "--attention", default="einsum", help="the encoders' attention: einsum, xla or cudnn (fused)"
  )
  args = p.parse_args(argv)
  cpu = jax.default_backend() == "cpu"
  batches = args.batches or (2 if cpu else 20)
  dtype = "bfloat16" if args.bf16 else "float32"
  devices = jax.local_devices()
  mesh = Mesh(np.asarray(devices), ("data",))
  bs = -(-args.batch_size // len(devices)) * len(devices)
  n = bs * batches
  rng = np.random.default_rng(0)
  result = {
    "device": devices[0].device_kind,
    "backend": jax.default_backend(),
    "num_devices": len(devices),
    "batch_size": bs,
    "timed_batches": batches,
    "compute_dtype": dtype,
    "attention": args.attention,
  }
  sizes = dict(batch_size=bs, chunk_size=max(bs, 256))
  common = dict(options=extract.ExtractionOptions(**sizes), devices=devices)
  with tempfile.TemporaryDirectory(prefix="flmoe-extract-bench-") as tmp:
    if args.which in ("text", "both"):
      enc = encoders.load_encoder(
        "text", "minilm", max_len=args.text_len, dtype=dtype, attention=args.attention
      )
      # Long enough to fill max_len: every batch uses the one bucket.
      texts = [" ".join(rng.choice(WORDS, args.text_len)) for _ in range(n)]

      def text_raw(k, texts=texts):
        ex = [RawExample(f"t{i}", {"text": t}, i % 2) for i, t in enumerate(texts[:k])]
        return RawDataset(
          "bench-text", [RawModality("text", "text")], TaskSpec("binary", 2), {"train": ex}
        )

      tok = enc.tokenize(texts[:bs], buckets=(args.text_len,))
      result["text"] = {
        "encoder": "minilm (BERT, 6 layers, hidden 384, real weights)",
        "max_len": args.text_len,
        "encode_samples_per_s": round(
          time_encode(enc, {k: tok[k] for k in ("input_ids", "attention_mask")}, mesh, batches), 1
        ),
      }
      rate, timing = time_extract(
        text_raw,
        os.path.join(tmp, "t"),
        text_encoder=enc,
        options=extract.ExtractionOptions(**sizes, text_buckets=(args.text_len,)),
        devices=devices,
      )
      result["text"].update(extract_samples_per_s=round(rate, 1), extract_timing_s=timing)
    if args.which in ("image", "both"):
      enc = random_vit_b16(dtype, os.path.join(tmp, "random-clip-vit-b16"), args.attention)
      images = [(rng.random((256, 320, 3)) * 255).astype(np.uint8) for _ in range(n)]

      def image_raw(k, images=images):
        ex = [RawExample(f"i{i}", {"image": im}, i % 2) for i, im in enumerate(images[:k])]
        return RawDataset(
          "bench-image", [RawModality("image", "image")], TaskSpec("binary", 2), {"train": ex}
        )

      px = enc.preprocess_batch(images[:bs])
      result["image"] = {
        "encoder": "CLIP ViT-B/16 vision tower shape (hidden 768, 12 layers), random weights",
        "image_size": enc.image_size,
        "patches": enc.seq_len,
        "encode_samples_per_s": round(time_encode(enc, px, mesh, batches), 1),
      }
      rate, timing = time_extract(image_raw, os.path.join(tmp, "i"), image_encoder=enc, **common)
      result["image"].update(extract_samples_per_s=round(rate, 1), extract_timing_s=timing)
  print(json.dumps(result, indent=1))
  return result


if __name__ == "__main__":
  main()
