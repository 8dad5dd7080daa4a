"""Typed probe results and their JSON form (STYLE 2.8: JSON, not pickle; baseline value in its own field).

* `InteractionValues`: exact interaction indices of every coalition up to `max_order` (SV, SII, Möbius).
* `PairScores`: per-pair scores (SII, redundancy gap) with standard errors, exact or Monte Carlo.
* `write_json_atomic` / `write_bytes_atomic`: a file is either the old one or the complete new one.

Array-valued fields are float arrays with the game's trailing output shape (`()` for a scalar game);
JSON stores them as nested lists.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Callable
from typing import Any, ClassVar, Self

import numpy as np

from flmoe_jax import atomic

PROBE_FORMAT = "flmoe-probe"
# 2: pairs ranked on the target's log-odds by default; pair masking's `random` control draws from the
# candidate pairs' tokens, `random_all` from all tokens, and each carries a paired test against the
# ranked pairs (1: ranked by logit / probability, one control from all tokens, no test).
PROBE_VERSION = 2


def _tolist(a: Any) -> Any:
  a = np.asarray(a)
  return a.item() if a.ndim == 0 else a.tolist()


# --------------------------------------------------------------------------------------------------
# JSON form shared by the result classes.
# --------------------------------------------------------------------------------------------------


def _same(v: Any) -> Any:
  return v


@dataclasses.dataclass(frozen=True)
class _Codec:
  """How one result field is written to and read back from its JSON dict.

  Attributes:
    encode: field value -> JSON value.
    decode: JSON value -> field value.
    optional: a missing key reads as the field's default (else it is a KeyError).
  """

  encode: Callable[[Any], Any] = _same
  decode: Callable[[Any], Any] = _same
  optional: bool = False


_PLAIN = _Codec()
_ARRAY = _Codec(_tolist, np.asarray)
_FLOATS = _Codec(_tolist, lambda v: np.asarray(v, np.float64))
_FLOATS_BY_NAME = _Codec(
  lambda d: {k: _tolist(v) for k, v in d.items()},
  lambda d: {k: np.asarray(v, np.float64) for k, v in d.items()},
)
_OUTPUTS = _Codec(list, tuple, optional=True)


class _JsonResult:
  """Base of the result dataclasses: their dict / JSON form, one key per field.

  A subclass sets `_KIND` (the dict's `kind`) and `_CODECS` ({field name: `_Codec`}; a field not
  named there is written and read as it is). The dict holds `kind`, then the fields in declaration
  order.
  """

  _KIND: ClassVar[str]
  _CODECS: ClassVar[dict[str, _Codec]]

  def to_dict(self) -> dict:
    d = {"kind": self._KIND}
    for f in dataclasses.fields(self):
      d[f.name] = self._CODECS.get(f.name, _PLAIN).encode(getattr(self, f.name))
    return d

  @classmethod
  def from_dict(cls, d: dict) -> Self:
    kwargs = {}
    for f in dataclasses.fields(cls):
      codec = cls._CODECS.get(f.name, _PLAIN)
      kwargs[f.name] = codec.decode(d.get(f.name, f.default) if codec.optional else d[f.name])
    return cls(**kwargs)

  def to_json(self) -> str:
    return json.dumps(self.to_dict())


@dataclasses.dataclass(frozen=True)
class InteractionValues(_JsonResult):
  """Interaction indices of all coalitions of size min_order..max_order (exact enumeration).

  Attributes:
    index: `SV`, `SII` or `Moebius`.
    max_order: largest coalition size reported.
    min_order: smallest coalition size reported (0 includes the empty set's index value).
    n_players: n.
    interactions: the coalitions, sorted tuples, in (size, lexicographic) order.
    values: float [len(interactions), *out_shape].
    baseline_value: v(∅) [*out_shape] (kept apart from the index values, shapiq #321).
    grand_value: v(N) [*out_shape].
    budget: number of coalitions evaluated (2^n).
    estimator: `exact`.
    seed: None (exact enumeration draws nothing).
    exact: True.
    outputs: names of the trailing output axis, if any.
  """

  index: str
  max_order: int
  min_order: int
  n_players: int
  interactions: tuple[tuple[int, ...], ...]
  values: np.ndarray
  baseline_value: np.ndarray
  grand_value: np.ndarray
  budget: int
  estimator: str = "exact"
  seed: int | None = None
  exact: bool = True
  outputs: tuple[str, ...] = ()

  _KIND = "interaction_values"
  _CODECS = {
    "interactions": _Codec(
      lambda ts: [list(t) for t in ts], lambda ts: tuple(tuple(t) for t in ts)
    ),
    "values": _FLOATS,
    "baseline_value": _ARRAY,
    "grand_value": _ARRAY,
    "outputs": _OUTPUTS,
  }

  @property
  def dict_values(self) -> dict[tuple[int, ...], Any]:
    """{coalition: value} (floats for scalar games)."""
    return {t: _tolist(v) for t, v in zip(self.interactions, self.values)}

  def __getitem__(self, coalition: tuple[int, ...]) -> Any:
    return self.dict_values[tuple(sorted(coalition))]


@dataclasses.dataclass(frozen=True)
class PairScores(_JsonResult):
  """Scores of player pairs (i, j) of one game.

  Attributes:
    pairs: int [P, 2] player ids.
    values: {index name: float [P, *out_shape]}; names among `SII` (Grabisch-Roubens, docs/method.md 5.2),
      `RG` (redundancy gap E[D_ij - max(D_i, D_j)], docs/method.md 5.3) and `RG-additive`
      (E[D_ij - D_i - D_j] = -SII).
    std_errors: same keys and shapes; standard error of the Monte Carlo mean (0 when exact).
    baseline_value: v(∅) [*out_shape], kept apart from the scores.
    grand_value: v(N) [*out_shape].
    n_players: n.
    budget: coalitions evaluated (4 per draw and pair, or 2^n when exact).
    n_samples: background coalitions drawn per pair (0 when exact).
    estimator: `exact`, `monte-carlo` or `monte-carlo-antithetic`.
    seed: the seed or raw key data the draws came from (None when exact).
    exact: whether the values are exact.
    outputs: names of the trailing output axis, if any.
  """

  pairs: np.ndarray
  values: dict[str, np.ndarray]
  std_errors: dict[str, np.ndarray]
  baseline_value: np.ndarray
  grand_value: np.ndarray
  n_players: int
  budget: int
  n_samples: int
  estimator: str
  seed: Any
  exact: bool
  outputs: tuple[str, ...] = ()

  _KIND = "pair_scores"
  _CODECS = {
    "pairs": _Codec(
      lambda p: np.asarray(p).tolist(), lambda p: np.asarray(p, np.int64).reshape(-1, 2)
    ),
    "values": _FLOATS_BY_NAME,
    "std_errors": _FLOATS_BY_NAME,
    "baseline_value": _ARRAY,
    "grand_value": _ARRAY,
    "outputs": _OUTPUTS,
  }

  @property
  def index(self) -> tuple[str, ...]:
    return tuple(self.values)

  def value(self, index: str = "SII", output: str | None = None) -> np.ndarray:
    """float [P] (or [P, *out]) of one index, optionally one named output."""
    v = np.asarray(self.values[index])
    return v[..., self.outputs.index(output)] if output is not None else v

  def dict_values(self, index: str = "SII") -> dict[tuple[int, int], Any]:
    """{(i, j): value}."""
    return {(int(i), int(j)): _tolist(v) for (i, j), v in zip(self.pairs, self.values[index])}

  def ranking(self, index: str = "SII", output: str | None = None) -> np.ndarray:
    """Pair indices sorted by descending score (ties: lower pair index first), int [P]."""
    v = self.value(index, output)
    if v.ndim != 1:
      raise ValueError(f"ranking needs a scalar score per pair; shape {v.shape}, pass `output`")
    return np.argsort(-v, kind="stable")


# --------------------------------------------------------------------------------------------------
# Atomic files.
# --------------------------------------------------------------------------------------------------


# One atomic writer for the package (`flmoe_jax.atomic`); the names the probes have used.
write_bytes_atomic = atomic.write_bytes
write_json_atomic = atomic.write_json


def read_probe(path: str | os.PathLike) -> dict:
  """Reads a `W/probe/<split>.json` file, checking format and version.

  Raises:
    ProbeError: not a probe file, or an unknown version.
  """
  from flmoe_jax.probes.games import ProbeError

  p = pathlib.Path(path)
  if not p.is_file():
    raise ProbeError(f"{p}: no probe results (run `flmoe probe` first)")
  d = json.loads(p.read_text())
  if d.get("format") != PROBE_FORMAT:
    raise ProbeError(f"{p}: format {d.get('format')!r}, want {PROBE_FORMAT!r}")
  if d.get("version") != PROBE_VERSION:
    raise ProbeError(
      f"{p}: version {d.get('version')!r}, this reader knows {PROBE_VERSION}; rerun flmoe probe"
    )
  return d
