"""Lazily loaded package names (PEP 562): a package lists what it exports, each name's module
imports on first use, so importing the package (and its light modules, e.g. the stage configs) does
not load jax.

  __getattr__, __all__ = lazy.exports(__name__, {"run_probe": "pipeline", ...}, eager=["ProbeError"])
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def exports(
  package: str, names: Mapping[str, str], *, eager: Iterable[str] = ()
) -> tuple[Callable[[str], Any], list[str]]:
  """A module `__getattr__` that loads `names` (name -> module, relative to `package` unless it
  starts with `flmoe_jax.`) on first use, and the sorted `__all__` (with the `eager` names)."""

  def getattr_(name: str) -> Any:
    if name not in names:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    where = names[name]
    module = importlib.import_module(
      where if where.startswith("flmoe_jax") else f"{package}.{where}"
    )
    value = getattr(module, name)
    setattr(sys.modules[package], name, value)  # resolved once
    return value

  return getattr_, sorted({*names, *eager})
