"""The one codec between the stages' typed artifacts and their JSON files (`flmoe_jax.artifact`)."""

import dataclasses
import json
import math
from typing import ClassVar

import numpy as np
import pytest

from flmoe_jax import artifact
from flmoe_jax.errors import ProbeError


@dataclasses.dataclass(frozen=True)
class _Inner:
  x: float
  tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Doc(artifact.Artifact):
  name: str
  inner: _Inner
  by_seed: dict[int, _Inner]
  pairs: np.ndarray = dataclasses.field(metadata={"dtype": np.int64, "shape": (-1, 2)})
  maybe: float | None = None

  FORMAT: ClassVar[str] = "test-doc"
  VERSION: ClassVar[int] = 2
  READS: ClassVar[tuple[int, ...]] = (1, 2)
  REMEDY: ClassVar[str] = "write it again"


def _doc(**kw):
  base = dict(
    name="a",
    inner=_Inner(float("nan"), ("t",)),
    by_seed={3: _Inner(1.5)},
    pairs=np.array([[0, 1], [2, 3]]),
  )
  return _Doc(**(base | kw))


def test_round_trip_keeps_types_and_writes_strict_json(tmp_path):
  doc = _doc()
  path = doc.save(tmp_path / "d.json")
  text = path.read_text()
  raw = json.loads(text)
  assert list(raw)[:2] == ["format", "version"] and raw["version"] == 2
  assert raw["inner"]["x"] is None and "NaN" not in text  # strict JSON
  assert raw["by_seed"] == {"3": {"x": 1.5, "tags": []}}
  back = _Doc.load(path)
  assert math.isnan(back.inner.x) and back.inner.tags == ("t",)
  assert back.by_seed == {3: _Inner(1.5)}  # int keys come back as ints
  assert back.pairs.dtype == np.int64 and back.pairs.tolist() == [[0, 1], [2, 3]]
  assert back.maybe is None
  # An empty pair list keeps its [P, 2] shape.
  empty = _Doc.from_json(_doc(pairs=np.zeros((0, 2), int)).to_json())
  assert empty.pairs.shape == (0, 2)
  assert not list(tmp_path.glob(".*tmp"))  # written atomically


def test_readers_refuse_other_formats_versions_and_shapes(tmp_path):
  good = _doc().to_dict()
  with pytest.raises(artifact.ArtifactError, match=r"x.json: test-doc version 7; .*write it again"):
    _Doc.from_dict({**good, "version": 7}, where="x.json")
  with pytest.raises(artifact.ArtifactError, match="not a 'test-doc' document"):
    _Doc.from_dict({**good, "format": "other"})
  with pytest.raises(artifact.MissingFieldError, match="_Doc lacks 'inner'"):
    _Doc.from_dict({k: v for k, v in good.items() if k != "inner"})
  with pytest.raises(artifact.ArtifactError, match="expected an object for _Inner"):
    _Doc.from_dict({**good, "inner": [1.0]})
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(artifact.ArtifactError, match="bad.json: not a JSON document"):
    _Doc.load(tmp_path / "bad.json")
  with pytest.raises(artifact.ArtifactError, match="no such test-doc file"):
    _Doc.load(tmp_path / "missing.json")


def test_a_stage_artifact_raises_its_own_error_naming_the_file(tmp_path):
  from flmoe_jax.probes.results import ProbeReport

  path = tmp_path / "test.json"
  path.write_text(json.dumps({"format": "flmoe-probe", "version": 2, "split": "test"}))
  with pytest.raises(ProbeError, match=r"test.json: malformed artifact: ProbeReport lacks 'run'"):
    ProbeReport.load(path)
  path.write_text(json.dumps({"format": "flmoe-probe", "version": 1}))
  with pytest.raises(
    ProbeError, match=r"version 1; this reader knows \(2, 3, 4\); rerun `flmoe probe`"
  ):
    ProbeReport.load(path)
