"""ENRICO reader: mobile UI screenshot + wireframe, 20 design topics (Leiva et al. 2020).

Expected layout under `raw_dir` (`design_topics.csv` from the luileito/enrico repository, the
`screenshots` and `wireframes` zips extracted next to it):

```
<raw_dir>/design_topics.csv          columns screen_id, topic (1,460 rows)
<raw_dir>/screenshots/<id>.jpg
<raw_dir>/wireframes/<id>.png
```

Rules (as MultiBench `datasets/enrico/get_data.py` and FL-I2MoE `src/common/datasets/enrico.py`):

* ids 50105 and 50109 are always dropped (their wireframes are corrupt) and recorded in `skipped`;
* classes = the sorted topic names of the remaining rows (20 on the real data);
* split: the remaining rows **in csv order** are shuffled with `random.Random(42).shuffle`, then cut
  with `split_bounds`: train = [0 : int(n * 0.65)], val = [int(n * 0.65) : int(n * (0.65 + 0.15))],
  test = the rest. For the real n = 1,458: int(947.7) = 947, int(1166.4) = 1166 -> 947 / 219 / 292.
  Examples keep the shuffled order within a split.

The split is computed before any per-example check, so an example left out with `on_error="skip"` (a
missing screenshot, say) does not move the others between splits.
"""

from __future__ import annotations

import csv
import io
import os
import random

from flmoe_jax.data.raw import base
from flmoe_jax.data.store import TaskSpec
from flmoe_jax.errors import DatasetError

NAME = "enrico"
IGNORED_IDS = ("50105", "50109")  # corrupt wireframes, dropped by the reference code
TRAIN_FRACTION = 0.65
VAL_FRACTION = 0.15
SEED = 42
MODALITIES = (base.RawModality("screenshot", "image"), base.RawModality("wireframe", "image"))
# The 20 topics of the real design_topics.csv, sorted (label index = position).
TOPICS = (
  "bare", "calculator", "camera", "chat", "editor", "form", "gallery", "list", "login", "maps",
  "mediaplayer", "menu", "modal", "news", "other", "profile", "search", "settings", "terms",
  "tutorial",
)  # fmt: skip


def split_bounds(n: int) -> tuple[int, int]:
  """The reference split points: (end of train, end of val) for `n` shuffled ids.

  Computed exactly as the reference, in float arithmetic: `int(n * 0.65)` and
  `int(n * (0.65 + 0.15))`. n = 1458 gives (947, 1166), i.e. 947 / 219 / 292.
  """
  return int(n * TRAIN_FRACTION), int(n * (TRAIN_FRACTION + VAL_FRACTION))


def shuffled_splits(ids: list[str], seed: int = SEED) -> dict[str, list[str]]:
  """Shuffles `ids` (a copy) with `random.Random(seed)` and cuts it with `split_bounds`."""
  keys = list(range(len(ids)))
  random.Random(seed).shuffle(
    keys
  )  # the reference shuffles indices; same permutation as shuffling ids
  order = [ids[k] for k in keys]
  a, b = split_bounds(len(ids))
  return {"train": order[:a], "val": order[a:b], "test": order[b:]}


def _read_rows(path) -> list[tuple[str, str]]:
  text = base.read_text(path, NAME, "columns screen_id, topic")
  with io.StringIO(text, newline="") as f:
    reader = csv.DictReader(f)
    if not reader.fieldnames or not {"screen_id", "topic"} <= set(reader.fieldnames):
      raise DatasetError(f"{NAME}: {path} must have the columns screen_id and topic")
    rows = []
    for line, row in enumerate(reader, start=2):
      sid, topic = (row.get("screen_id") or "").strip(), (row.get("topic") or "").strip()
      if not sid or not topic:
        raise DatasetError(f"{NAME}: {path} line {line}: empty screen_id or topic")
      rows.append((sid, topic))
  seen = set()
  for sid, _ in rows:
    if sid in seen:
      raise DatasetError(f"{NAME}: {path}: screen_id {sid} appears twice")
    seen.add(sid)
  if not rows:
    raise DatasetError(f"{NAME}: {path} has no rows")
  return rows


@base.register(NAME)
def load_enrico(
  raw_dir: str | os.PathLike,
  *,
  on_error: str = "fail",
  seed: int = SEED,
  verify_images: bool = False,
) -> base.RawDataset:
  """Reads ENRICO from its hand-downloaded folder.

  Args:
    raw_dir: the folder holding `design_topics.csv`, `screenshots/` and `wireframes/`.
    on_error: `fail` (default) raises `DatasetError` on missing images; `skip` leaves those examples
      out and records them.
    seed: the shuffle seed (42 in the reference code).
    verify_images: also open every image with PIL (`base.verify_images`).

  Returns:
    The dataset: modalities screenshot + wireframe (both images), multiclass over the sorted topics,
    splits train/val/test.
  """
  base.check_on_error(on_error)
  root = base.require_dir(raw_dir, NAME)
  rows = _read_rows(root / "design_topics.csv")
  skipped = [
    {"id": sid, "reason": "known corrupt wireframe (dropped by the reference code)"}
    for sid, _ in rows
    if sid in IGNORED_IDS
  ]
  rows = [(sid, topic) for sid, topic in rows if sid not in IGNORED_IDS]
  topics = sorted({topic for _, topic in rows})
  topic_index = {t: i for i, t in enumerate(topics)}
  topic_of = dict(rows)
  split_ids = shuffled_splits([sid for sid, _ in rows], seed)

  problems = base.Problems(NAME, str(root))
  splits: dict[str, list[base.RawExample]] = {}
  for split, ids in split_ids.items():
    examples = []
    for sid in ids:
      shot = root / "screenshots" / f"{sid}.jpg"
      wire = root / "wireframes" / f"{sid}.png"
      missing = [str(p) for p in (shot, wire) if not p.is_file()]
      if missing:
        problems.add(sid, f"[{split}] missing image file(s) {', '.join(missing)}")
        continue
      examples.append(
        base.RawExample(
          id=sid,
          inputs={"screenshot": str(shot), "wireframe": str(wire)},
          label=topic_index[topic_of[sid]],
        )
      )
    splits[split] = examples

  ds = base.RawDataset(
    name=NAME,
    modalities=MODALITIES,
    task=TaskSpec(type="multiclass", num_classes=len(topics), class_names=tuple(topics)),
    splits=splits,
    skipped=skipped,
    info={
      "reader": NAME,
      "layout": "design_topics.csv + screenshots/<id>.jpg + wireframes/<id>.png",
      "seed": seed,
      "split_rule": "csv order, random.Random(seed).shuffle, int(n*0.65), int(n*(0.65+0.15))",
      "listed": {s: len(v) for s, v in split_ids.items()},
    },
  )
  problems.resolve(on_error, ds.skipped)
  if verify_images:
    base.verify_images(ds, on_error)
  return ds
