"""Atomic files: every artifact appears whole or not at all, whatever moment a run is killed.

A file is written to a hidden temporary sibling (`.<name>.tmp`, see `temporary`), flushed to disk and
renamed into place (`os.replace`, atomic on POSIX); the temporary is removed when writing fails. Readers
therefore see the old file or the new one, never a half-written one. A killed run leaves at most that
hidden temporary, which no reader looks at and which the rerun's write of the same file replaces (its
name is fixed per file, so nothing accumulates). One writer per file at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import numpy as np


def temporary(path: str | os.PathLike) -> pathlib.Path:
  """The temporary sibling `path` is written to before the rename: `.<name>.tmp`."""
  path = pathlib.Path(path)
  return path.with_name(f".{path.name}.tmp")


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a temporary sibling of `path` to write (a file or a folder); renames it into place on exit.

  On an exception the temporary is removed and `path` is left as it was.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = temporary(path)
  if tmp.is_dir():  # a killed write's leftover (ours: the hidden temporary name)
    shutil.rmtree(tmp)
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if tmp.is_dir():
      shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists():
      tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
  """Writes `data` to `path` atomically (fsynced before the rename)."""
  path = pathlib.Path(path)
  with replacing(path) as tmp, open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  return path


def write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
  """Writes `text` (UTF-8) to `path` atomically."""
  return write_bytes(path, text.encode("utf-8"))


def json_default(o: Any) -> Any:
  """`json.dumps(default=...)` for numpy scalars and arrays and paths."""
  if isinstance(o, np.generic):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  if isinstance(o, pathlib.PurePath):
    return str(o)
  raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = None) -> pathlib.Path:
  """JSON-encodes `obj` (numpy scalars and arrays allowed; NaN refused) and writes it atomically."""
  text = json.dumps(obj, default=json_default, allow_nan=False, indent=indent)
  return write_text(path, text)
