"""`FeaturesConfig`: every option of `flmoe features` / `run_extraction`, declared once (jax-free);
`ExtractionOptions`: the part of them `extract_features` takes from a library caller.

  cfg = FeaturesConfig(dataset="mmimdb", raw="data/mmimdb", text_encoder="minilm")
  store = run_extraction(cfg, "runs/stores/mmimdb")

A run config's `features` block (configs/easyvqa.py) holds the same keys (`features_from_config`).
The command line is generated from the fields (`flmoe features --help`); docs/features.md explains the
encoders, buckets and the resumable extraction.
"""

from __future__ import annotations

import dataclasses

from flmoe_jax import choices
from flmoe_jax.errors import EncoderError, StoreError
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


@dataclasses.dataclass(frozen=True)
class ExtractionOptions:
  """How `extract_features` encodes and stores the examples (the defaults of `FeaturesConfig`).

  Checked when made: a bad value raises a one-line `StoreError` / `EncoderError`.

  Attributes:
    batch_size: examples per device step (padded up to a multiple of the local device count).
    dtype: feature dtype on disk, `float16` or `float32`.
    text_buckets: padded text lengths (each compiles once); None pads every batch to `max_len`.
    on_error: unreadable images: `fail` (list them all and stop) or `skip` (drop those examples,
      record them in the manifest).
    limit_per_split: keep only the first N examples of each split (None or <= 0: all; stored as
      None then).
    chunk_size: examples per chunk file (the unit of resumption).
    num_workers: image decoding threads (None: the CPU count, at most 32).
  """

  batch_size: int = FeaturesConfig.batch_size
  dtype: str = FeaturesConfig.dtype
  text_buckets: tuple[int, ...] | None = FeaturesConfig.text_buckets
  on_error: str = FeaturesConfig.on_error
  limit_per_split: int | None = None
  chunk_size: int = FeaturesConfig.chunk_size
  num_workers: int | None = None

  def __post_init__(self):
    if self.dtype not in choices.FEATURE_DTYPES:
      raise StoreError(f"store dtype {self.dtype!r} not in {choices.FEATURE_DTYPES}")
    if self.on_error not in choices.ON_ERROR:
      raise EncoderError(f"on_error {self.on_error!r} not in {choices.ON_ERROR}")
    if self.batch_size < 1 or self.chunk_size < 1:
      raise EncoderError("batch_size and chunk_size must be positive")
    if self.text_buckets is not None:
      object.__setattr__(self, "text_buckets", tuple(int(b) for b in self.text_buckets))
    if not self.limit_per_split or self.limit_per_split <= 0:
      object.__setattr__(self, "limit_per_split", None)

  @classmethod
  def of(cls, cfg: FeaturesConfig) -> ExtractionOptions:
    """The extraction options of a `FeaturesConfig` (`run_extraction`)."""
    return cls(
      **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if hasattr(cfg, f.name)}
    )


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
