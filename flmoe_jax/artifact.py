"""Typed, versioned artifacts: the one codec between the stages' dataclasses and their JSON files.

Every stage writes its result as a frozen dataclass subclassing `Artifact` (`TrainSummary`,
`ExplainReport`, `ProbeReport`); this module turns such a value into plain JSON data and back,
driven by the field type hints:

  dataclass      <-> object, one key per field (a missing key with a default reads as the default)
  tuple[X, ...]  <-> list        dict[K, X] <-> object (int keys are written as strings)
  X | None       <-> value or null
  float          <-> number; NaN and infinities are written as null (strict JSON) and read as NaN
  np.ndarray     <-> nested lists (float64 unless the field's metadata names a `dtype`; a `shape`
                     there reshapes, e.g. `(-1, 2)` for a possibly empty list of pairs)

`Artifact.save` writes the document atomically with a `format` and `version` header first;
`Artifact.load` refuses other formats and unknown versions, naming the file, instead of guessing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np

from flmoe_jax import atomic
from flmoe_jax.errors import FlmoeError


class ArtifactError(FlmoeError, ValueError):
  """A file or dict that is not the artifact it should be (format, version or structure)."""


class MissingFieldError(ArtifactError, KeyError):
  """A required field is absent (also a KeyError, as a missing key of a dict is)."""

  def __str__(self) -> str:  # KeyError would quote the message
    return str(self.args[0])


def to_plain(obj: Any) -> Any:
  """JSON-able data of `obj` (dataclasses, mappings, sequences, numpy values, scalars).

  Args:
    obj: the value.

  Returns:
    Plain dicts, lists, strings, numbers, booleans and None; non-finite floats become None.
  """
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
  if isinstance(obj, Mapping):
    return {str(k): to_plain(v) for k, v in obj.items()}
  if isinstance(obj, np.ndarray):
    return to_plain(obj.tolist())
  if isinstance(obj, (tuple, list)):
    return [to_plain(v) for v in obj]
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None  # strict JSON has no NaN/Inf
  if isinstance(obj, pathlib.PurePath):
    return str(obj)
  return obj


def from_plain(tp: Any, value: Any, *, metadata: Mapping[str, Any] | None = None) -> Any:
  """Rebuilds a value of type `tp` from `to_plain` data.

  Args:
    tp: the type hint (a dataclass, `tuple[...]`, `dict[K, V]`, `X | None`, `np.ndarray`, a scalar
      type or `Any`).
    value: the plain data.
    metadata: the dataclass field's metadata (`dtype`, `shape` of an array field).

  Returns:
    The typed value.

  Raises:
    MissingFieldError: a dataclass lacks a field without a default.
    ArtifactError: the data does not have the structure the type asks for.
  """
  origin = typing.get_origin(tp)
  if origin in (typing.Union, types.UnionType):
    if value is None:
      return None
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return from_plain(args[0], value, metadata=metadata)
  if dataclasses.is_dataclass(tp):
    return _dataclass(tp, value)
  if tp is np.ndarray:
    meta = metadata or {}
    a = np.asarray(value, dtype=meta.get("dtype", np.float64))
    return a.reshape(meta["shape"]) if "shape" in meta else a
  if origin is tuple:
    args = typing.get_args(tp)
    _expect(isinstance(value, list), tp, value)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(from_plain(args[0], v) for v in value)
    return tuple(from_plain(a, v) for a, v in zip(args, value, strict=True))
  if origin is dict:
    kt, vt = typing.get_args(tp)
    _expect(isinstance(value, Mapping), tp, value)
    return {(int(k) if kt is int else k): from_plain(vt, v) for k, v in value.items()}
  if tp is float:
    return math.nan if value is None else float(value)
  if tp is int:
    return int(value)
  return value


def _expect(ok: bool, tp: Any, value: Any) -> None:
  if not ok:
    raise ArtifactError(f"malformed artifact: expected {tp}, got {type(value).__name__}")


def _dataclass(tp: type, value: Any) -> Any:
  if not isinstance(value, Mapping):
    raise ArtifactError(f"malformed artifact: expected an object for {tp.__name__}")
  hints = typing.get_type_hints(tp)
  kw = {}
  for f in dataclasses.fields(tp):
    if f.name in value:
      kw[f.name] = from_plain(hints[f.name], value[f.name], metadata=f.metadata)
    elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
      raise MissingFieldError(f"malformed artifact: {tp.__name__} lacks {f.name!r}")
  return tp(**kw)


class Artifact:
  """Mixin of the stages' frozen result dataclasses: versioned JSON documents.

  A subclass sets `FORMAT` (the document's `format`), `VERSION` (written) and `READS` (versions
  it can read; a document without a header reads as version `LEGACY_VERSION` when that is set:
  files written before the header existed), and may set `ERROR`, the stage's own error type that
  reading failures are raised as (default `ArtifactError`).
  """

  FORMAT: ClassVar[str]
  VERSION: ClassVar[int]
  READS: ClassVar[tuple[int, ...]]
  LEGACY_VERSION: ClassVar[int | None] = None
  ERROR: ClassVar[type[Exception]] = ArtifactError
  INDENT: ClassVar[int | None] = 1
  # How to write a current one, appended to version errors (e.g. "rerun `flmoe probe`").
  REMEDY: ClassVar[str] = ""

  @classmethod
  def _error(cls, message: str, kind: type[ArtifactError] = ArtifactError) -> Exception:
    return kind(message) if cls.ERROR is ArtifactError else cls.ERROR(message)

  def to_dict(self) -> dict[str, Any]:
    """JSON-able dict, with the format header first."""
    return {"format": self.FORMAT, "version": self.VERSION, **to_plain(self)}

  def to_json(self) -> str:
    """The versioned JSON document (indented by `INDENT`)."""
    return json.dumps(self.to_dict(), indent=self.INDENT, allow_nan=False)

  @classmethod
  def from_dict(cls, d: Any, *, where: str = "") -> Self:
    """Parses a document dict (refuses other formats and versions).

    Args:
      d: the parsed JSON document.
      where: what to name in errors (e.g. the file).

    Raises:
      ArtifactError: another format, an unknown version, or a malformed body.
    """
    at = f"{where}: " if where else ""
    if not isinstance(d, dict):
      raise cls._error(f"{at}not a {cls.FORMAT!r} document")
    version = d.get("version", cls.LEGACY_VERSION if "format" not in d else None)
    if "format" in d or cls.LEGACY_VERSION is None:
      if d.get("format") != cls.FORMAT:
        raise cls._error(f"{at}not a {cls.FORMAT!r} document (format {d.get('format')!r})")
    if version not in cls.READS:
      remedy = f"; {cls.REMEDY}" if cls.REMEDY else ""
      raise cls._error(
        f"{at}{cls.FORMAT} version {d.get('version')!r}; this reader knows {cls.READS}{remedy}"
      )
    body = {k: v for k, v in d.items() if k not in ("format", "version")}
    try:
      return from_plain(cls, body)
    except ArtifactError as e:
      raise cls._error(f"{at}{e}", type(e)) from None

  @classmethod
  def from_json(cls, text: str, *, where: str = "") -> Self:
    """Parses a document written by `to_json`."""
    try:
      d = json.loads(text)
    except json.JSONDecodeError as e:
      raise cls._error(f"{where + ': ' if where else ''}not a JSON document ({e})") from None
    return cls.from_dict(d, where=where)

  def save(self, path: str | os.PathLike) -> pathlib.Path:
    """Writes the document atomically (a temporary file, then a rename)."""
    return atomic.write_text(path, self.to_json())

  @classmethod
  def load(cls, path: str | os.PathLike) -> Self:
    """Reads a document file.

    Raises:
      ArtifactError: no such file, or not a readable document of this kind.
    """
    p = pathlib.Path(path)
    if not p.is_file():
      raise cls._error(f"{p}: no such {cls.FORMAT} file")
    return cls.from_json(p.read_text(), where=str(p))
