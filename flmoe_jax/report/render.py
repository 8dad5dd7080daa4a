"""Rendering a report: one self-contained HTML page (images embedded) and a Markdown twin.

A report is a list of sections; a section holds paragraphs, tables and figures. Tables are lists of rows
(the first row is the header). The HTML embeds every PNG as a data URI so the page can be mailed or archived
alone; the Markdown links the PNGs, which are copied next to it under `report_files/`.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import os
import pathlib
import shutil
from collections.abc import Sequence

from flmoe_jax import atomic


@dataclasses.dataclass
class Table:
  """A table: `rows[0]` is the header. `id` becomes the HTML element id (tests look tables up by it)."""

  id: str
  caption: str
  rows: list[list[str]]


@dataclasses.dataclass
class Figure:
  """A PNG figure on disk."""

  path: pathlib.Path
  caption: str


@dataclasses.dataclass
class Section:
  """A titled block of paragraphs, tables and figures (rendered in that order)."""

  title: str
  paragraphs: list[str] = dataclasses.field(default_factory=list)
  tables: list[Table] = dataclasses.field(default_factory=list)
  figures: list[Figure] = dataclasses.field(default_factory=list)
  id: str = ""


# A paragraph that starts with one of these markers is a verdict, styled by its outcome.
VERDICT_STYLES = (
  ("PASS:", "verdict pass"),
  ("FAIL:", "verdict fail"),
  ("NOT SHOWN:", "verdict notshown"),
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d2327;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #e3e6ea;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0 1.2em;font-size:.92em}
th,td{border:1px solid #d5d9de;padding:.3em .6em;text-align:right}th{background:#f3f5f7}
td:first-child,th:first-child{text-align:left}caption{caption-side:top;text-align:left;font-weight:600;
padding-bottom:.3em}figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top;max-width:100%}
figure img{max-width:520px;width:100%;border:1px solid #e3e6ea}figcaption{font-size:.85em;color:#555}
.verdict{padding:.6em .9em;border-radius:6px;margin:.6em 0;font-weight:600}
.pass{background:#e6f4ea;border:1px solid #8bc79b}.fail{background:#fdecea;border:1px solid #e9a19a}
.notshown{background:#f4f4f4;border:1px solid #bbb}
.meta{font-size:.85em;color:#444}code{background:#f3f5f7;padding:0 .25em;border-radius:3px}
"""


def _para_html(p: str) -> str:
  # Paragraphs are our own text; a leading marker picks the verdict style.
  for tag, cls in VERDICT_STYLES:
    if p.startswith(tag):
      return f'<div class="{cls}">{html.escape(p)}</div>'
  if p.startswith("META:"):
    return f'<p class="meta">{html.escape(p[5:].strip())}</p>'
  return f"<p>{html.escape(p)}</p>"


def _table_html(t: Table) -> str:
  head = "".join(f"<th>{html.escape(c)}</th>" for c in t.rows[0])
  body = "".join(
    "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in t.rows[1:]
  )
  return (
    f'<table id="{html.escape(t.id)}"><caption>{html.escape(t.caption)}</caption>'
    f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
  )


def _figure_html(f: Figure) -> str:
  data = base64.b64encode(pathlib.Path(f.path).read_bytes()).decode()
  return (
    f'<figure><img alt="{html.escape(f.caption)}" src="data:image/png;base64,{data}">'
    f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
  )


def render_html(title: str, sections: Sequence[Section]) -> str:
  """The whole report as one HTML string with embedded images."""
  parts = [
    "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
    f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
    f"<h1>{html.escape(title)}</h1>",
  ]
  for s in sections:
    sid = f' id="{html.escape(s.id)}"' if s.id else ""
    parts.append(f"<section{sid}><h2>{html.escape(s.title)}</h2>")
    parts += [_para_html(p) for p in s.paragraphs]
    parts += [_table_html(t) for t in s.tables]
    if s.figures:
      parts.append("<div>" + "".join(_figure_html(f) for f in s.figures) + "</div>")
    parts.append("</section>")
  parts.append("</body></html>")
  return "\n".join(parts)


def _md_cell(c) -> str:
  return str(c).replace("|", "\\|")


def render_markdown(
  title: str, sections: Sequence[Section], files_dir: str = "report_files"
) -> str:
  """The report as Markdown; figures are linked from `files_dir/`."""
  out = [f"# {title}", ""]
  for s in sections:
    out += [f"## {s.title}", ""]
    for p in s.paragraphs:
      for tag, _ in VERDICT_STYLES:
        if p.startswith(tag):
          p = f"**{p}**"
      out += [p.removeprefix("META:").strip() if p.startswith("META:") else p, ""]
    for t in s.tables:
      out += [f"**{t.caption}**", ""]
      out.append("| " + " | ".join(_md_cell(c) for c in t.rows[0]) + " |")
      out.append("|" + "---|" * len(t.rows[0]))
      out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows[1:]]
      out.append("")
    for f in s.figures:
      out += [f"![{f.caption}]({files_dir}/{pathlib.Path(f.path).name})", ""]
  return "\n".join(out)


def write_report(out_dir: str | os.PathLike, title: str, sections: Sequence[Section]) -> dict:
  """Writes `report.html`, `report.md` and `report_files/` atomically into `out_dir`.

  Returns:
    {"html": path, "md": path}.
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  files = out / "report_files"
  files.mkdir(exist_ok=True)
  seen = {}
  for s in sections:
    for f in s.figures:
      # Figures of different runs may share a file name: give each a unique name in report_files/.
      name = pathlib.Path(f.path).name
      if name in seen and seen[name] != pathlib.Path(f.path).resolve():
        name = f"{len(seen)}_{name}"
      seen[name] = pathlib.Path(f.path).resolve()
      dst = files / name
      shutil.copyfile(f.path, dst)
      f.path = dst
  paths = {}
  for key, text in (
    ("html", render_html(title, sections)),
    ("md", render_markdown(title, sections)),
  ):
    paths[key] = atomic.write_text(out / f"report.{key}", text)
  return paths
