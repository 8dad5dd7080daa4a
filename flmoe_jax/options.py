"""Stage options: frozen config dataclasses whose fields carry their flag, doc and checks.

Each option of a stage is declared once, as a field of the stage's config made with `option`:

  @dataclasses.dataclass(frozen=True)
  class ProbeConfig(StageConfig):
    draws: int = option(64, "draws per pair when --budget is not set", lowest=1)

From that one declaration `add_arguments` generates the command-line flag (`--draws`, its type,
default, choices and help), `from_args` builds the config from parsed flags, and constructing the
config checks every value (type, choices, lower bound, then the class's own `validate`), raising
the class's `error` type with a one-line message that names the flag. Booleans become switches
named after their non-default value (`figures=True` -> `--no-figures`); tuples are comma-separated
on the command line (`--mask-budgets 1,2,5`). The module imports no jax.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from typing import Any, ClassVar

from flmoe_jax.errors import ConfigError, FlmoeError


def option(
  default: Any,
  doc: str,
  *,
  choices: tuple | None = None,
  lowest: float | None = None,
  flag: str | None = None,
  cli: bool = True,
  repeat: bool = False,
) -> Any:
  """A config field with its documentation and checks.

  Args:
    default: the default value (immutable: tuples, not lists).
    doc: one line of help, shown by `--help` and in the API docs.
    choices: the allowed values (for a tuple option: of each element).
    lowest: the smallest allowed number (for a tuple option: of each element).
    flag: the command-line flag when it is not `--<name-with-dashes>`.
    cli: False for options of the Python API only (no flag).
    repeat: a tuple option whose elements are given one flag each (`--grid a=1,2 --grid b=3`)
      instead of comma-separated in one.
  """
  meta = {
    "doc": doc,
    "choices": choices,
    "lowest": lowest,
    "flag": flag,
    "cli": cli,
    "repeat": repeat,
  }
  return dataclasses.field(default=default, metadata=meta)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _unpack(tp) -> tuple[type, bool, bool]:
  """Annotation -> (scalar type, optional, is a tuple of that type)."""
  optional = False
  if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    optional, tp = True, args[0]
  if typing.get_origin(tp) is tuple:
    return typing.get_args(tp)[0], optional, True
  return tp, optional, False


def flag_of(f: dataclasses.Field) -> str:
  """The command-line flag of a config field."""
  return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def switch_of(f: dataclasses.Field) -> str:
  """The flag as typed: a boolean option is a switch named after its non-default value."""
  flag = flag_of(f)
  if f.default is True:
    return flag.replace("--", "--no-", 1)
  return flag


def _check_scalar(value, kind: type, f: dataclasses.Field, error: type[FlmoeError]):
  flag, meta = flag_of(f), f.metadata
  if kind is bool:
    ok = isinstance(value, bool)
  elif kind is int:
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif kind is float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    value = float(value) if ok else value
  else:
    ok = isinstance(value, kind)
  lowest = meta.get("lowest")
  if not ok or (lowest is not None and not value >= lowest):  # `not >=` also refuses NaN
    bound = f" >= {lowest}" if lowest is not None else ""
    raise error(
      f"{flag} must be {'an' if kind is int else 'a'} {kind.__name__}{bound}, got {value!r}"
    )
  choices = meta.get("choices")
  if choices is not None and value not in choices:
    raise error(f"{flag} {value!r} not in {tuple(choices)}")
  return value


@dataclasses.dataclass(frozen=True)
class StageConfig:
  """Base of the stage configs: checks every field on construction.

  Subclasses are frozen dataclasses whose fields are made with `option`; they set `error` (the
  exception their stage raises) and may override `validate` for checks across fields.
  """

  error: ClassVar[type[FlmoeError]] = ConfigError

  def __post_init__(self):
    hints = _hints(type(self))
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      kind, optional, many = _unpack(hints[f.name])
      if value is None:
        if not optional:
          raise self.error(f"{flag_of(f)} must be given")
        continue
      if many:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
          raise self.error(f"{flag_of(f)} must be a sequence of {kind.__name__}, got {value!r}")
        value = tuple(_check_scalar(v, kind, f, self.error) for v in value)
      else:
        value = _check_scalar(value, kind, f, self.error)
      object.__setattr__(self, f.name, value)  # normalised: lists -> tuples, ints -> floats
    self.validate()

  def validate(self) -> None:
    """Checks across fields (raise `self.error`); the per-field checks have passed."""

  def replace(self, **changes) -> StageConfig:
    """A checked copy with some options changed."""
    return dataclasses.replace(self, **changes)


def _parse_tuple(kind: type, flag: str):
  def parse(text: str) -> tuple:
    try:
      return tuple(kind(t) for t in text.split(",") if t.strip())
    except ValueError:
      raise argparse.ArgumentTypeError(
        f"expected comma-separated {kind.__name__} values, got {text!r}"
      ) from None

  parse.__name__ = f"{flag} list"
  return parse


def add_arguments(parser: argparse.ArgumentParser, cls: type[StageConfig]) -> None:
  """Adds one flag per command-line option of `cls` (defaults, choices and help from the fields).

  Defaults are left to the config (flags default to None), so `from_args` fills in only what was
  given; `--help` shows the config's defaults.
  """
  hints = _hints(cls)
  for f in dataclasses.fields(cls):
    meta = f.metadata
    if not meta.get("cli", True):
      continue
    kind, _, many = _unpack(hints[f.name])
    flag, doc = flag_of(f), meta.get("doc", "").replace("%", "%%")  # argparse formats help with %
    if kind is bool:
      parser.add_argument(
        switch_of(f), dest=f.name, action="store_const", const=not f.default, help=doc
      )
      continue
    shown = ",".join(str(v) for v in f.default) if many else f.default
    kwargs = {"dest": f.name, "default": None, "help": doc}
    if f.default is not None and f.default not in ("", ()):
      kwargs["help"] += f" (default: {shown})"
    if many and meta.get("repeat"):
      kwargs.update(type=kind, action="append", metavar=flag.removeprefix("--").upper())
      kwargs["help"] += " (repeatable)"
    elif many:
      kwargs["type"] = _parse_tuple(kind, flag)
      kwargs["metavar"] = f"{kind.__name__.upper()},..."
    else:
      kwargs["type"] = kind
      if meta.get("choices") is not None:
        kwargs["choices"] = meta["choices"]
      else:
        kwargs["metavar"] = flag.removeprefix("--").replace("-", "_").upper()
    parser.add_argument(flag, **kwargs)


def from_args(cls: type[StageConfig], args: argparse.Namespace, **fixed) -> StageConfig:
  """The config of `cls` from parsed flags: the flags given, `fixed`, defaults for the rest."""
  given = {
    f.name: getattr(args, f.name)
    for f in dataclasses.fields(cls)
    if f.metadata.get("cli", True) and getattr(args, f.name, None) is not None
  }
  return cls(**{**given, **fixed})


def documented(cls: type[StageConfig]) -> type[StageConfig]:
  """Class decorator (above `@dataclass`): appends the options' docs to the class docstring, so
  `help()` and the API reference list every option with its flag and default."""
  lines = [(cls.__doc__ or cls.__name__).rstrip(), "", "Attributes:"]
  for f in dataclasses.fields(cls):
    where = f"flag {switch_of(f)}" if f.metadata.get("cli", True) else "Python API only"
    lines.append(f"  {f.name}: {f.metadata.get('doc', '')} ({where}; default {f.default!r}).")
  cls.__doc__ = "\n".join(lines)
  return cls
