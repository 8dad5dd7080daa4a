"""`FeaturesConfig`: every option of `flmoe features` / `run_extraction`, declared once (jax-free).

  cfg = FeaturesConfig(dataset="mmimdb", raw="data/mmimdb", text_encoder="minilm")
  store = run_extraction(cfg, "runs/stores/mmimdb")

A run config's `features` block (configs/easyvqa.py) holds the same keys (`features_from_config`).
The command line is generated from the fields (`flmoe features --help`); docs/features.md explains the
encoders, buckets and the resumable extraction.
"""

from __future__ import annotations

import dataclasses

from flmoe_jax import choices
from flmoe_jax.errors import EncoderError
from flmoe_jax.options import StageConfig, add_arguments, documented, option

# Text lengths the batches are padded to (the shortest that fits each batch's longest text).
DEFAULT_TEXT_BUCKETS = (32, 64, 128, 320)
# Examples per resumable chunk of a partial extraction.
DEFAULT_CHUNK_SIZE = 512


@documented
@dataclasses.dataclass(frozen=True)
class FeaturesConfig(StageConfig):
  """The options of frozen-encoder feature extraction (`flmoe features`), each with its flag and default."""

  error = EncoderError

  dataset: str = option("", "reader name: mmimdb, enrico, mmhs150k, easyvqa, tfds:<name>")
  raw: str = option("", "the hand-downloaded dataset folder (easyvqa: none, its data is bundled)")
  text_encoder: str | None = option(
    None, "folder, HF id or 'minilm' (default roberta-base); loaded only if the data has text"
  )
  image_encoder: str | None = option(
    None,
    "folder, HF id (default openai/clip-vit-base-patch16), or a fixed patch descriptor: hog, "
    "pixels, hog:<size>/<patch>",
  )
  text_max_len: int = option(320, "text tokens kept", lowest=1, flag="--max-len")
  text_buckets: tuple[int, ...] | None = option(
    DEFAULT_TEXT_BUCKETS, "padded text lengths (None: pad every batch to --max-len)", cli=False
  )
  batch_size: int = option(32, "examples per encoder call", lowest=1)
  dtype: str = option("float16", "storage dtype", choices=choices.FEATURE_DTYPES)
  compute_dtype: str = option(
    "float32", "the encoders' compute dtype (--bf16: bfloat16)", choices=choices.COMPUTE_DTYPES
  )
  encoder_attention: str = option(
    "einsum",
    "the encoders' attention: their own einsum code, or fused jax.nn.dot_product_attention (xla; "
    "cudnn: GPU flash attention, bf16) with the same weights (BERT, RoBERTa, ViT, CLIP)",
    choices=choices.ATTENTION_IMPLEMENTATIONS,
  )
  on_error: str = option(
    "fail", "unreadable images: fail, or skip the example", choices=choices.ON_ERROR
  )
  limit_per_split: int = option(0, "the first N examples of each split only (0: all)", lowest=0)
  chunk_size: int = option(DEFAULT_CHUNK_SIZE, "examples per resumable chunk", lowest=1, cli=False)
  allow_download: bool = option(False, "fetch encoders from the Hugging Face Hub")
  resume: bool = option(True, "resume a partial extraction (--no-resume: discard it, start over)")
  overwrite: bool = option(False, "replace a store made differently")
  progress: bool = option(True, "show progress (--no-progress: quiet)")


def add_cli(subparsers):
  """Adds the `features` subcommand's parser, without loading jax; the caller sets its handler
  (`extract.cli_features`; `extract.add_cli` does both).

  flmoe features --config configs/easyvqa.py[:quick] [--config.features.limit_per_split=500]
  flmoe features --dataset mmimdb --raw data/mmimdb --out runs/stores/mmimdb [--text-encoder DIR]
  """
  p = subparsers.add_parser("features", help="extract frozen-encoder features into a feature store")
  p.add_argument(
    "--config", help="a run config with a `features` block (its `store` is the output)"
  )
  p.add_argument("--out", default=None, help="the store folder to write")
  add_arguments(p, FeaturesConfig)
  p.add_argument(
    "--bf16", action="store_true", help="bfloat16 compute (the same as --compute-dtype bfloat16)"
  )

  return p
