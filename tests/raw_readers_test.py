"""Raw dataset readers on tiny fake copies of the real layouts (built in tmp_path), plus easy-VQA.

The `make_*` helpers mirror each dataset's real folder layout; tfds_builders_test.py reuses them.
"""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from flmoe_jax.data.raw import (
  available,
  base,
  enrico,
  load_easyvqa,
  load_enrico,
  load_mmhs150k,
  load_mmimdb,
  load_raw,
  mmhs150k,
  mmimdb,
  verify_images,
)
from flmoe_jax.errors import DatasetError, FlmoeError


def _image(path: pathlib.Path, seed: int, size=(12, 16), mode="RGB"):
  """A tiny deterministic image; JPEG or PNG by suffix."""
  rng = np.random.default_rng(seed)
  arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
  im = Image.fromarray(arr, "RGB")
  if mode != "RGB":
    im = im.convert(mode)
  path.parent.mkdir(parents=True, exist_ok=True)
  im.save(path)


# --------------------------------------------------------------------------------------------------
# MM-IMDb.
# --------------------------------------------------------------------------------------------------

MMIMDB_GENRES = {
  1: ["Drama", "Sci-Fi", "News"],  # News is outside the 23: ignored
  2: ["Comedy"],
  3: ["Film-Noir", "Crime"],
  4: ["Reality-TV"],  # no known genre: all-zero label
  5: ["Music", "Musical"],
}


def make_mmimdb(root: pathlib.Path, *, plotless: bool = False) -> pathlib.Path:
  """12 movies, split.json 8 / 2 / 2; with `plotless`, movie 0000012 has no plot."""
  ds = root / "dataset"
  ds.mkdir(parents=True)
  ids = [f"{i:07d}" for i in range(1, 13)]
  for i, mid in enumerate(ids, start=1):
    meta = {
      "title": f"Movie {i}",
      "plot": [
        f"Plot one of movie {i}.",
        f"A much longer second plot of movie {i}, with more words.",
      ],
      "genres": MMIMDB_GENRES.get(i, ["Drama"]),
    }
    if plotless and i == 12:
      del meta["plot"]
    (ds / f"{mid}.json").write_text(json.dumps(meta))
    _image(ds / f"{mid}.jpeg", i)
  # Official membership deliberately not in id order.
  split = {"train": ids[4:12], "dev": ids[2:4], "test": ids[0:2]}
  (root / "split.json").write_text(json.dumps(split))
  return root


def test_mmimdb_official(tmp_path):
  root = make_mmimdb(tmp_path / "mmimdb")
  ds = load_mmimdb(root)
  assert [m.name for m in ds.modalities] == ["text", "image"]
  assert ds.task.type == "multilabel" and ds.task.num_classes == 23
  assert ds.task.class_names == mmimdb.GENRES
  assert {s: len(v) for s, v in ds.splits.items()} == {"train": 8, "val": 2, "test": 2}
  assert [e.id for e in ds.splits["test"]] == ["0000001", "0000002"]
  assert [e.id for e in ds.splits["val"]] == ["0000003", "0000004"]
  first = ds.splits["test"][0]
  assert first.inputs["text"] == "Plot one of movie 1."  # plot[0]
  assert first.inputs["image"] == str(root / "dataset" / "0000001.jpeg")
  assert first.label.dtype == np.uint8 and first.label.shape == (23,)
  assert np.flatnonzero(first.label).tolist() == [0, 10]  # drama, sci-fi; News ignored
  by_id = {e.id: e for s in ds.splits.values() for e in s}
  assert np.flatnonzero(by_id["0000003"].label).tolist() == [4, 22]  # crime, film-noir
  assert not by_id["0000004"].label.any()
  assert np.flatnonzero(by_id["0000005"].label).tolist() == [11, 18]  # music, musical
  assert ds.info["no_known_genre"] == 1 and ds.skipped == []


def test_mmimdb_longest_plot_and_parent_folder(tmp_path):
  make_mmimdb(tmp_path / "mmimdb")
  ds = load_mmimdb(tmp_path, plot="longest")  # the parent of mmimdb/ works too
  assert ds.splits["test"][0].inputs["text"].startswith("A much longer second plot of movie 1")


def test_mmimdb_reference_split(tmp_path):
  root = make_mmimdb(tmp_path / "mmimdb")
  ds = load_mmimdb(root, split_mode="reference")
  # 12 files: the reference's fallback round(0.599 n) / round(0.1 n) / rest = 7 / 1 / 4 in id order.
  ids = [f"{i:07d}" for i in range(1, 13)]
  assert [e.id for e in ds.splits["train"]] == ids[:7]
  assert [e.id for e in ds.splits["val"]] == ids[7:8]
  assert [e.id for e in ds.splits["test"]] == ids[8:]
  a, b = mmimdb.reference_bounds(25959)
  assert (a, b - a, 25959 - b) == (15552, 2608, 7799)


def test_mmimdb_int_ids_in_split_json(tmp_path):
  root = make_mmimdb(tmp_path / "mmimdb")
  split = json.loads((root / "split.json").read_text())
  (root / "split.json").write_text(json.dumps({k: [int(i) for i in v] for k, v in split.items()}))
  ds = load_mmimdb(root)
  assert [e.id for e in ds.splits["test"]] == ["0000001", "0000002"]


def test_mmimdb_bad_movie_fail_and_skip(tmp_path):
  root = make_mmimdb(tmp_path / "mmimdb", plotless=True)
  (root / "dataset" / "0000002.jpeg").unlink()
  with pytest.raises(DatasetError, match="2 bad example") as err:
    load_mmimdb(root)
  assert "0000012" in str(err.value) and "0000002.jpeg" in str(err.value)
  assert "\n" not in str(err.value)
  ds = load_mmimdb(root, on_error="skip")
  assert {s["id"] for s in ds.skipped} == {"0000002", "0000012"}
  assert "plot" in next(s["reason"] for s in ds.skipped if s["id"] == "0000012")
  assert {s: len(v) for s, v in ds.splits.items()} == {"train": 7, "val": 2, "test": 1}


def test_mmimdb_missing_files(tmp_path):
  root = make_mmimdb(tmp_path / "mmimdb")
  (root / "split.json").unlink()
  with pytest.raises(DatasetError, match="split.json"):
    load_mmimdb(root)
  with pytest.raises(DatasetError, match="does not exist"):
    load_mmimdb(tmp_path / "nowhere")
  with pytest.raises(DatasetError, match="split_mode"):
    load_mmimdb(root, split_mode="random")


def test_mmimdb_id_listed_twice(tmp_path):
  root = make_mmimdb(tmp_path / "mmimdb")
  split = json.loads((root / "split.json").read_text())
  split["test"].append(int(split["dev"][1]))  # the same movie once more, as an int
  (root / "split.json").write_text(json.dumps(split))
  with pytest.raises(
    DatasetError, match=r"split.json: id 0000004 is listed twice \(dev and test\)"
  ):
    load_mmimdb(root)


def test_error_message_lists_at_most_ten(tmp_path):
  root = make_mmimdb(tmp_path / "mmimdb")
  for p in (root / "dataset").glob("*.jpeg"):
    p.unlink()
  with pytest.raises(DatasetError) as err:
    load_mmimdb(root)
  msg = str(err.value)
  assert "12 bad example" in msg and "and 2 more" in msg
  assert msg.count(".jpeg is missing") == 10


# --------------------------------------------------------------------------------------------------
# ENRICO.
# --------------------------------------------------------------------------------------------------

ENRICO_ROWS = [
  ("10594", "login"), ("50105", "list"), ("20001", "list"), ("20002", "gallery"),
  ("50109", "menu"), ("20003", "login"), ("20004", "calculator"), ("20005", "list"),
  ("20006", "news"), ("20007", "chat"),
]  # fmt: skip


def make_enrico(root: pathlib.Path) -> pathlib.Path:
  """10 csv rows with real topic names, including the two known-corrupt ids."""
  root.mkdir(parents=True)
  lines = ["screen_id,topic"] + [f"{sid},{topic}" for sid, topic in ENRICO_ROWS]
  (root / "design_topics.csv").write_text("\n".join(lines) + "\n")
  for i, (sid, _) in enumerate(ENRICO_ROWS):
    _image(root / "screenshots" / f"{sid}.jpg", i, size=(6, 10))
    _image(root / "wireframes" / f"{sid}.png", 100 + i, size=(6, 10), mode="P")
  return root


def test_enrico_split_arithmetic():
  a, b = enrico.split_bounds(1458)
  assert (a, b - a, 1458 - b) == (947, 219, 292)
  ids = [str(i) for i in range(1458)]
  splits = enrico.shuffled_splits(ids)
  assert [len(v) for v in splits.values()] == [947, 219, 292]
  assert sorted(sum(splits.values(), [])) == sorted(ids)


def test_enrico(tmp_path):
  root = make_enrico(tmp_path / "enrico")
  ds = load_enrico(root)
  assert [(m.name, m.kind) for m in ds.modalities] == [
    ("screenshot", "image"),
    ("wireframe", "image"),
  ]
  kept = [(s, t) for s, t in ENRICO_ROWS if s not in enrico.IGNORED_IDS]
  topics = sorted({t for _, t in kept})
  assert ds.task.type == "multiclass" and ds.task.class_names == tuple(topics)
  assert [s["id"] for s in ds.skipped] == ["50105", "50109"]
  # 8 ids in csv order, Random(42)-shuffled, int(8*.65)=5, int(8*.8)=6 -> 5 / 1 / 2.
  expected = enrico.shuffled_splits([s for s, _ in kept], 42)
  assert {s: [e.id for e in v] for s, v in ds.splits.items()} == expected
  assert [len(v) for v in ds.splits.values()] == [5, 1, 2]
  topic_of = dict(kept)
  for ex in sum(ds.splits.values(), []):
    assert ds.task.class_names[ex.label] == topic_of[ex.id]
    assert ex.inputs["screenshot"] == str(root / "screenshots" / f"{ex.id}.jpg")
    assert ex.inputs["wireframe"] == str(root / "wireframes" / f"{ex.id}.png")
  assert set(topics) <= set(enrico.TOPICS)


def test_enrico_missing_image_and_corrupt_image(tmp_path):
  root = make_enrico(tmp_path / "enrico")
  (root / "wireframes" / "20003.png").unlink()
  with pytest.raises(DatasetError, match="20003.png"):
    load_enrico(root)
  ds = load_enrico(root, on_error="skip")
  assert "20003" in [s["id"] for s in ds.skipped]
  assert sum(len(v) for v in ds.splits.values()) == 7
  # The split is computed before the skip: the others keep their membership.
  full = enrico.shuffled_splits([s for s, _ in ENRICO_ROWS if s not in enrico.IGNORED_IDS])
  assert {s: [e.id for e in v] for s, v in ds.splits.items()} == {
    s: [i for i in v if i != "20003"] for s, v in full.items()
  }
  # A corrupt screenshot is caught by the PIL check (reader option or `verify_images`).
  _image(root / "wireframes" / "20003.png", 7, size=(6, 10))
  (root / "screenshots" / "20001.jpg").write_bytes(b"not an image at all")
  assert sum(len(v) for v in load_enrico(root).splits.values()) == 8  # existence check only
  with pytest.raises(DatasetError, match="20001.jpg cannot be read"):
    load_enrico(root, verify_images=True)
  ds = load_enrico(root, on_error="skip", verify_images=True)
  assert [s["id"] for s in ds.skipped] == ["50105", "50109", "20001"]
  assert "20001" not in [e.id for v in ds.splits.values() for e in v]


def test_enrico_bad_csv(tmp_path):
  root = make_enrico(tmp_path / "enrico")
  (root / "design_topics.csv").write_text("id,label\n1,list\n")
  with pytest.raises(DatasetError, match="screen_id and topic"):
    load_enrico(root)
  (root / "design_topics.csv").unlink()
  with pytest.raises(DatasetError, match="design_topics.csv is missing"):
    load_enrico(root)


# --------------------------------------------------------------------------------------------------
# MMHS150K.
# --------------------------------------------------------------------------------------------------

MMHS_VOTES = {
  "101": [0, 0, 0], "102": [1, 2, 0], "103": [0, 0, 3], "104": [4, 4, 4], "105": [0, 5, 5],
  "106": [1, 0, 0], "107": [2, 2, 0], "108": [0, 1, 0], "109": [3, 0, 1], "110": [0, 0, 0],
  "111": [5, 1, 2], "112": [0, 0, 4],
}  # fmt: skip
MMHS_OCR = {"102": "TEXT IN IMAGE", "105": "more ocr", "110": ""}


def make_mmhs(root: pathlib.Path, *, missing_image: bool = False) -> pathlib.Path:
  """12 tweets, splits 8 / 2 / 2, OCR for 3; with `missing_image`, 112 has no image."""
  root.mkdir(parents=True)
  gt = {
    tid: {
      "img_url": f"http://example.invalid/{tid}.jpg",
      "labels": votes,
      "tweet_url": f"http://example.invalid/{tid}",
      "tweet_text": f"tweet {tid} @user https://t.co/abc{tid}",
      "labels_str": ["x"] * 3,
    }
    for tid, votes in MMHS_VOTES.items()
  }
  (root / "MMHS150K_GT.json").write_text(json.dumps(gt))
  for i, tid in enumerate(MMHS_VOTES):
    if not (missing_image and tid == "112"):
      _image(root / "img_resized" / f"{tid}.jpg", i)
  (root / "img_txt").mkdir()
  for tid, text in MMHS_OCR.items():
    (root / "img_txt" / f"{tid}.json").write_text(json.dumps({"img_text": text}))
  ids = list(MMHS_VOTES)
  (root / "splits").mkdir()
  for name, part in (("train", ids[:8]), ("val", ids[8:10]), ("test", ids[10:])):
    (root / "splits" / f"{name}_ids.txt").write_text("\n".join(part) + "\n")
  return root


def test_mmhs150k(tmp_path):
  root = make_mmhs(tmp_path / "mmhs")
  ds = load_mmhs150k(root)
  assert ds.task.type == "binary" and ds.task.class_names == ("not_hate", "hate")
  assert {s: [e.id for e in v] for s, v in ds.splits.items()} == {
    "train": list(MMHS_VOTES)[:8], "val": ["109", "110"], "test": ["111", "112"],
  }  # fmt: skip
  labels = {e.id: e.label for v in ds.splits.values() for e in v}
  # Hate iff at least 2 of the 3 votes are > 0 (e.g. [1, 2, 0] -> hate, [0, 0, 3] -> not hate).
  assert labels == {t: int(sum(v > 0 for v in votes) >= 2) for t, votes in MMHS_VOTES.items()}
  assert [labels[t] for t in ("101", "102", "103", "104", "105", "106")] == [0, 1, 0, 1, 1, 0]
  ex = ds.splits["train"][1]
  assert ex.meta == {"votes": [1, 2, 0], "img_text": "TEXT IN IMAGE"}
  assert ex.inputs["text"] == "tweet 102 @user https://t.co/abc102"
  assert ex.inputs["image"] == str(root / "img_resized" / "102.jpg")


def test_mmhs150k_ocr_and_urls(tmp_path):
  root = make_mmhs(tmp_path / "mmhs")
  ds = load_mmhs150k(root, append_ocr=True, strip_urls=True)
  by_id = {e.id: e for v in ds.splits.values() for e in v}
  assert by_id["102"].inputs["text"] == "tweet 102 @user TEXT IN IMAGE"
  assert by_id["110"].inputs["text"] == "tweet 110 @user"  # empty OCR text: nothing appended
  assert by_id["101"].inputs["text"] == "tweet 101 @user"  # no OCR file
  assert (
    load_mmhs150k(root, append_ocr=True)
    .splits["train"][4]
    .inputs["text"]
    .endswith("abc105 more ocr")
  )
  assert mmhs150k.hate_label([1, 2, 0]) == 1 and mmhs150k.hate_label([0, 0, 5]) == 0


def test_mmhs150k_bad_tweets(tmp_path):
  root = make_mmhs(tmp_path / "mmhs", missing_image=True)
  with open(root / "splits" / "val_ids.txt", "a") as f:
    f.write("999\n")  # not in the ground truth
  with pytest.raises(DatasetError, match="112.jpg is missing") as err:
    load_mmhs150k(root)
  assert "999: [val] id not in MMHS150K_GT.json" in str(err.value)
  ds = load_mmhs150k(root, on_error="skip")
  assert {s["id"] for s in ds.skipped} == {"112", "999"}
  assert [e.id for e in ds.splits["test"]] == ["111"]
  (root / "splits" / "test_ids.txt").unlink()
  with pytest.raises(DatasetError, match="test_ids.txt is missing"):
    load_mmhs150k(root, on_error="skip")


def test_mmhs150k_bad_votes(tmp_path):
  root = make_mmhs(tmp_path / "mmhs")
  gt = json.loads((root / "MMHS150K_GT.json").read_text())
  gt["101"]["labels"] = [0, 7, 0]
  (root / "MMHS150K_GT.json").write_text(json.dumps(gt))
  with pytest.raises(DatasetError, match="101: .*3 ints in 0-5"):
    load_mmhs150k(root)


def test_mmhs150k_id_listed_twice(tmp_path):
  root = make_mmhs(tmp_path / "mmhs")
  with open(root / "splits" / "test_ids.txt", "a") as f:
    f.write("103\n")
  with pytest.raises(
    DatasetError, match=r"tweet id 103 is listed twice in splits/ \(train, test\)"
  ):
    load_mmhs150k(root, on_error="skip")


def test_shared_reader_helpers():
  assert base.first_repeated_id({"a": ["1", "2"], "b": ["3"]}) is None
  assert base.first_repeated_id({"a": ["1", "2", "1"], "b": ["2"]}) == ("1", "a", "a")
  assert base.first_repeated_id({"a": ["1", "2"], "b": ["3", "2", "1"]}) == ("2", "a", "b")
  problems = base.Problems("toy", "src")

  def read_one(i):
    return f"bad {i}" if i.startswith("x") else base.RawExample(i, {}, 0)

  got = base.read_examples({"train": ["1", "x2", "3"], "val": ["x4"]}, read_one, problems)
  assert {s: [e.id for e in v] for s, v in got.items()} == {"train": ["1", "3"], "val": []}
  assert problems.items == [("x2", "[train] bad x2"), ("x4", "[val] bad x4")]


# --------------------------------------------------------------------------------------------------
# easy-VQA (the real data inside the easy-vqa wheel).
# --------------------------------------------------------------------------------------------------


def test_easyvqa_package_data():
  pytest.importorskip("easy_vqa")
  ds = load_easyvqa(None)
  sizes = {s: len(v) for s, v in ds.splits.items()}
  assert sizes["train"] + sizes["val"] == 38575 and sizes["test"] == 9673
  assert 0.05 < sizes["val"] / 38575 < 0.15
  assert ds.task.type == "multiclass" and ds.task.num_classes == 13
  for split, examples in ds.splits.items():
    labels = np.array([e.label for e in examples])
    assert labels.min() >= 0 and labels.max() < 13, split
  # Val holds whole images: no image is shared with train.
  train_images = {e.inputs["image"] for e in ds.splits["train"]}
  val_images = {e.inputs["image"] for e in ds.splits["val"]}
  assert len(val_images) == 400 and not train_images & val_images
  assert ds.splits["test"][0].id == "test_0" and ds.splits["train"][0].id.startswith("train_")
  ex = ds.splits["test"][0]
  assert isinstance(ex.inputs["text"], str) and pathlib.Path(ex.inputs["image"]).is_file()
  with Image.open(ex.inputs["image"]) as im:
    assert im.size == (64, 64)
  small = load_easyvqa(None, limit_per_split=5)
  assert {s: [e.id for e in v] for s, v in small.splits.items()} == {
    s: [e.id for e in v[:5]] for s, v in ds.splits.items()
  }


# --------------------------------------------------------------------------------------------------
# Shared helpers and dispatch.
# --------------------------------------------------------------------------------------------------


def test_verify_images_header_and_full(tmp_path):
  good = tmp_path / "good.jpg"
  _image(good, 0, size=(32, 32))
  truncated = tmp_path / "truncated.jpg"
  truncated.write_bytes(good.read_bytes()[:200])
  assert base.check_image_file(good, full=True) is None
  assert "missing" in base.check_image_file(tmp_path / "nope.jpg")
  assert base.check_image_file(truncated, full=True) is not None

  def make():
    return base.RawDataset(
      name="t",
      modalities=(base.RawModality("image", "image"),),
      task=mmhs150k.TASK,
      splits={"train": [base.RawExample("a", {"image": str(good)}, 0),
                        base.RawExample("b", {"image": str(truncated)}, 1)]},
    )  # fmt: skip

  with pytest.raises(DatasetError, match="b: .*truncated.jpg"):
    verify_images(make(), full=True)
  ds = verify_images(make(), "skip", full=True)
  assert [e.id for e in ds.splits["train"]] == ["a"] and ds.skipped[0]["id"] == "b"


def test_load_raw_dispatch(tmp_path):
  assert {"mmimdb", "enrico", "mmhs150k", "easyvqa", "tfds:mmimdb"} <= set(available())
  with pytest.raises(DatasetError, match="available: .*mmimdb"):
    load_raw("imagenet", tmp_path)
  with pytest.raises(DatasetError, match="bad reader options"):
    load_raw("enrico", tmp_path, split_mode="official")
  with pytest.raises(DatasetError, match="on_error"):
    load_raw("enrico", make_enrico(tmp_path / "e"), on_error="ignore")
  assert issubclass(DatasetError, FlmoeError)
  ds = load_raw("mmhs150k", make_mmhs(tmp_path / "m"), append_ocr=True)
  assert ds.info["append_ocr"] is True
