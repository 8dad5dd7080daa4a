"""MM-IMDb reader: movie plot + poster, 23-genre multilabel (Arevalo et al. 2017).

Expected layout under `raw_dir` (the `mmimdb.tar.gz` archive, extracted; a `raw_dir` whose `mmimdb/`
subfolder holds these files is accepted too):

```
<raw_dir>/split.json         {"train": [ids], "dev": [ids], "test": [ids]}, 15,552 / 2,608 / 7,799
<raw_dir>/dataset/<id>.json  IMDbPY dump: "plot" (list of str), "genres" (list of str), "title"...
<raw_dir>/dataset/<id>.jpeg the poster
```

Rules (as the FL-I2MoE reference code, `src/common/datasets/mmimdb.py`):

* text = the first plot summary `plot[0]` (`plot="longest"` picks the longest, as the GMU build
  script);
* labels = multi-hot uint8 [23] over `GENRES` (the reference list and order), genres matched
  lower-cased; genres outside the list are ignored (a movie may end with an all-zero label; counted
  in `info`);
* splits `train` / `val` / `test`: `split_mode="official"` (default) uses `split.json` (`dev` ->
  `val`); `split_mode="reference"` reproduces the reference code instead: the ids of
  `dataset/*.json` sorted by file name, cut into contiguous slices [0:15552], [15552:18160],
  [18160:] when there are 25,959 files (otherwise, as the reference, the first round(0.599 N) / next
  round(0.100 N) / rest). The sizes equal the official ones but the membership does not, so
  published numbers need the official split.

A movie whose JSON is missing or malformed, has no plot or no `genres` list, or whose poster is
missing is a per-example problem: `on_error="fail"` raises `DatasetError` listing them, `"skip"`
records them in `RawDataset.skipped`.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

from flmoe_jax.data.raw import base
from flmoe_jax.data.store import TaskSpec
from flmoe_jax.errors import DatasetError

NAME = "mmimdb"
GENRES = (
  "drama", "comedy", "romance", "thriller", "crime", "action", "adventure", "horror", "documentary",
  "mystery", "sci-fi", "music", "fantasy", "family", "biography", "war", "history", "animation",
  "musical", "western", "sport", "short", "film-noir",
)  # fmt: skip
MODALITIES = (base.RawModality("text", "text"), base.RawModality("image", "image"))
TASK = TaskSpec(type="multilabel", num_classes=len(GENRES), class_names=GENRES)
SPLIT_MODES = ("official", "reference")
PLOT_MODES = ("first", "longest")
# split.json key -> our split name.
OFFICIAL_SPLITS = {"train": "train", "dev": "val", "test": "test"}
REFERENCE_TOTAL = 25959
REFERENCE_BOUNDS = (15552, 18160)  # train = [0:15552], val = [15552:18160], test = [18160:]


def reference_bounds(n: int) -> tuple[int, int]:
  """The reference code's contiguous split points for `n` filename-sorted ids.

  Args:
    n: number of `dataset/*.json` files.

  Returns:
    (end of train, end of val): (15552, 18160) for the real 25,959 movies, else
    (round(0.599 n), round(0.599 n) + round(0.100 n)) as the reference code's fallback.
  """
  if n == REFERENCE_TOTAL:
    return REFERENCE_BOUNDS
  n_train = int(round(n * 0.599))
  n_val = int(round(n * 0.100))
  return n_train, n_train + n_val


def multi_hot(genres: list[str]) -> np.ndarray:
  """uint8 [23] multi-hot over `GENRES`; genres outside the list are ignored."""
  index = {g: i for i, g in enumerate(GENRES)}
  label = np.zeros(len(GENRES), np.uint8)
  for g in genres:
    i = index.get(str(g).strip().lower())
    if i is not None:
      label[i] = 1
  return label


def _root(raw_dir) -> pathlib.Path:
  root = base.require_dir(raw_dir, NAME)
  if not (root / "dataset").is_dir() and (root / NAME / "dataset").is_dir():
    root = root / NAME  # the archive extracts into mmimdb/
  if not (root / "dataset").is_dir():
    raise DatasetError(f"{NAME}: folder {root / 'dataset'} is missing (expected dataset/<id>.json)")
  return root


def _normalise_id(raw_id, ds_dir: pathlib.Path) -> str:
  mid = str(raw_id).strip()
  if mid.isdigit() and not (ds_dir / f"{mid}.json").exists() and len(mid) < 7:
    mid = mid.zfill(7)  # IMDb ids are 7-digit, zero-padded file names
  return mid


def _official_splits(root: pathlib.Path, ds_dir: pathlib.Path) -> dict[str, list[str]]:
  path = root / "split.json"
  data = base.read_json(base.require_file(path, NAME, "the official split lists"), NAME)
  if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in OFFICIAL_SPLITS):
    raise DatasetError(f"{NAME}: {path} must map 'train', 'dev' and 'test' to lists of ids")
  listed = {key: [_normalise_id(i, ds_dir) for i in data[key]] for key in OFFICIAL_SPLITS}
  repeat = base.first_repeated_id(listed)
  if repeat:
    mid, first, again = repeat
    raise DatasetError(f"{NAME}: {path}: id {mid} is listed twice ({first} and {again})")
  return {split: listed[key] for key, split in OFFICIAL_SPLITS.items()}


def _reference_splits(ds_dir: pathlib.Path) -> dict[str, list[str]]:
  ids = sorted(p.stem for p in ds_dir.glob("*.json"))
  if not ids:
    raise DatasetError(f"{NAME}: no <id>.json files in {ds_dir}")
  a, b = reference_bounds(len(ids))
  return {"train": ids[:a], "val": ids[a:b], "test": ids[b:]}


def _read_movie(ds_dir: pathlib.Path, mid: str, plot: str) -> base.RawExample | str:
  """Returns the movie's example, or the reason why it cannot be read."""
  path = ds_dir / f"{mid}.json"
  if not path.is_file():
    return f"metadata file {path} is missing"
  try:
    with open(path, encoding="utf-8") as f:
      meta = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    return f"{path} is not valid JSON ({base.one_line(e)})"
  if not isinstance(meta, dict):
    return f"{path} is not a JSON object"
  plots = meta.get("plot")
  if not isinstance(plots, list) or not plots or not all(isinstance(p, str) for p in plots):
    return f"{path} has no 'plot' list of strings"
  text = plots[0] if plot == "first" else max(plots, key=len)
  if not text.strip():
    return f"{path}: the plot summary is empty"
  genres = meta.get("genres")
  if not isinstance(genres, list):
    return f"{path} has no 'genres' list"
  poster = ds_dir / f"{mid}.jpeg"
  if not poster.is_file():
    return f"poster {poster} is missing"
  return base.RawExample(
    id=mid, inputs={"text": text.strip(), "image": str(poster)}, label=multi_hot(genres)
  )


@base.register(NAME)
def load_mmimdb(
  raw_dir: str | os.PathLike,
  *,
  on_error: str = "fail",
  split_mode: str = "official",
  plot: str = "first",
  verify_images: bool = False,
) -> base.RawDataset:
  """Reads MM-IMDb from its hand-downloaded folder.

  Args:
    raw_dir: the folder holding `split.json` and `dataset/` (or its parent holding `mmimdb/`).
    on_error: `fail` (default) raises `DatasetError` on bad movies; `skip` leaves them out and
      records them.
    split_mode: `official` (`split.json`) or `reference` (the reference code's filename-sorted
      contiguous slices; see the module docstring).
    plot: `first` (`plot[0]`, as FL-I2MoE) or `longest` (as the GMU build script).
    verify_images: also open every poster with PIL (`base.verify_images`).

  Returns:
    The dataset: modalities text + image, multilabel over `GENRES`, splits train/val/test.
  """
  base.check_on_error(on_error)
  if split_mode not in SPLIT_MODES:
    raise DatasetError(f"{NAME}: split_mode={split_mode!r} is not one of {SPLIT_MODES}")
  if plot not in PLOT_MODES:
    raise DatasetError(f"{NAME}: plot={plot!r} is not one of {PLOT_MODES}")
  root = _root(raw_dir)
  ds_dir = root / "dataset"
  split_ids = (
    _official_splits(root, ds_dir) if split_mode == "official" else _reference_splits(ds_dir)
  )

  problems = base.Problems(NAME, str(root))
  splits = base.read_examples(split_ids, lambda mid: _read_movie(ds_dir, mid, plot), problems)
  no_genre = sum(int(not ex.label.any()) for examples in splits.values() for ex in examples)

  ds = base.RawDataset(
    name=NAME,
    modalities=MODALITIES,
    task=TASK,
    splits=splits,
    info={
      "reader": NAME,
      "layout": "mmimdb.tar.gz: split.json + dataset/<id>.json + dataset/<id>.jpeg",
      "split_mode": split_mode,
      "plot": plot,
      "listed": {s: len(v) for s, v in split_ids.items()},
      "no_known_genre": no_genre,
    },
  )
  problems.resolve(on_error, ds.skipped)
  if verify_images:
    base.verify_images(ds, on_error)
  return ds
