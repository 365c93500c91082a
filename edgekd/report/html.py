"""report.html: one self-contained page (styles inline, plots as base64 PNG), answer first:
the verdict, a matrix per student, the Pareto plots, then every row in a collapsed table.
All text goes through `html.escape` (file names and failure reasons are not ours to trust)."""

from __future__ import annotations

import base64
from html import escape

from edgekd.report import cells
from edgekd.report.compression import HEADERS as COMPRESSION_HEADERS
from edgekd.report.compression import INTRO as COMPRESSION_INTRO
from edgekd.report.dropped import HEADERS as DROPPED_HEADERS
from edgekd.report.dropped import INTRO as DROPPED_INTRO
from edgekd.report.headline import NOT_RUN, Headline, PlatformOutcome
from edgekd.report.matrix import Cell, FileLine, Matrix
from edgekd.report.table import FIRST_NUMBER, HEADERS

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1b1f24; line-height: 1.4; }
h1 { margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
.muted { color: #59636e; }
.badge { display: inline-block; padding: .15em .6em; border-radius: 4px; font-weight: 700; color: #fff; }
.PASS { background: #1a7f37; } .FAIL { background: #cf222e; } .NOT-RUN { background: #6e7781; }
table { border-collapse: collapse; font-size: 13px; margin: .6em 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: #f6f8fa; } th small { display: block; font-weight: 400; color: #59636e; }
td.name, th.name { text-align: left; }
td small { display: block; color: #59636e; font-size: 11px; }
td.failed { background: #ffebe9; color: #a40e26; }
td.ok { color: #1a7f37; font-weight: 600; } td.no { color: #a40e26; font-weight: 600; }
tr.ships td { background: #dafbe1; } .ship { font-size: 11px; color: #1a7f37; font-weight: 600; }
ol.footnotes { font-size: 12px; color: #59636e; }
ul.rules { margin: .2em 0; padding-left: 1.2em; text-align: left; font-size: 12px; }
img { max-width: 100%; }
details summary { cursor: pointer; font-weight: 600; }
"""


def render(title: str, teacher_accuracy: float | None, head: Headline, matrices: list[Matrix],
           plots: dict[str, bytes | None], full: list[list[str]], compression: list[list[str]] = (),
           dropped: list[list[str]] = ()) -> str:
    """The whole page. `plots` maps a heading to its PNG bytes (None: nothing to plot)."""
    sections = [
        _header(title, teacher_accuracy),
        _verdict(head),
        _students(matrices),
        _compression(compression),
        _dropped(dropped),
        _plots(plots),
        _full_table(full),
    ]
    body = "\n".join(sections)
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def _header(title: str, teacher_accuracy: float | None) -> str:
    teacher = "unknown" if teacher_accuracy is None else f"{teacher_accuracy:.4f}"
    return (f"<h1>{escape(title)}</h1>\n<p class=\"muted\">Teacher accuracy {escape(teacher)}. Retention is "
            "a file's accuracy over the teacher's (1.0 = as good as the teacher); latencies are p50.</p>")


# --- 1. the verdict -------------------------------------------------------------------------------

def _verdict(head: Headline) -> str:
    status = escape(head.status)
    badge = f"<span class=\"badge {status.replace(' ', '-')}\">{status}</span>"
    parts = [f"<section id=\"verdict\">\n<h2>Release gate {badge}</h2>"]
    if head.status == NOT_RUN:
        parts.append("<p>The gate has not run: nothing has been chosen to ship yet.</p>")
    if head.platforms:
        names = "<th class=\"name\">platform</th><th class=\"name\">ships</th>"
        header = names + "".join(f"<th>{h}</th>" for h in ("format/quant", "size", "retention"))
        table_rows = "".join(_platform_row(p) for p in head.platforms)
        parts.append(f"<table>\n<tr>{header}</tr>\n{table_rows}</table>")
    if head.notes:
        notes = "".join(f"<li>{escape(n)}</li>" for n in head.notes)
        parts.append(f"<ul class=\"muted\">{notes}</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def _platform_row(p: PlatformOutcome) -> str:
    platform = f"<td class=\"name\">{escape(p.platform)}</td>"
    if p.ships is None:
        return f"<tr>{platform}<td class=\"name\" colspan=\"4\">{_nothing_passes(p)}</td></tr>\n"
    shipped = f"<td class=\"name ok\">{escape(p.ships)}</td>"
    numbers = [p.label, cells.size(p.size_bytes), cells.ratio(p.retention)]
    tds = "".join(f"<td>{escape(n)}</td>" for n in numbers)
    return f"<tr>{platform}{shipped}{tds}</tr>\n"


def _nothing_passes(p: PlatformOutcome) -> str:
    if not p.rejected:
        return "<span class=\"no\">nothing to ship</span>: no candidate files were benchmarked"
    items = []
    for r in p.rejected:
        rules = "; ".join(r.rules) or "no rule recorded"
        items.append(f"<li><code>{escape(r.name)}</code>: {escape(rules)}</li>")
    return f"<span class=\"no\">nothing passes</span><ul class=\"rules\">{''.join(items)}</ul>"


# --- 2. a matrix per student ----------------------------------------------------------------------

def _students(matrices: list[Matrix]) -> str:
    intro = ("<p class=\"muted\">One line per exported file. Hover a number for its runtime and p90; an "
             "empty cell means the file does not run there (the target takes other formats).</p>")
    body = "\n".join(_matrix(i, m) for i, m in enumerate(matrices))
    return f"<section id=\"students\">\n<h2>Students</h2>\n{intro}\n{body}\n</section>"


def _matrix(index: int, m: Matrix) -> str:
    notes = m.footnotes()
    heads = "".join(_column_head(c.name, c.note) for c in m.columns)
    lines = "".join(_file_row(index, f, notes) for f in m.files)
    table = f"<table class=\"matrix\">\n<tr><th class=\"name\">file</th>{heads}</tr>\n{lines}</table>"
    return f"<h3>{escape(m.model)}</h3>\n{table}\n{_footnotes(index, notes)}"


def _column_head(name: str, note: str) -> str:
    small = f"<small>{escape(note)}</small>" if note else ""
    return f"<th>{escape(name)}{small}</th>"


def _file_row(index: int, f: FileLine, notes: dict[str, int]) -> str:
    ship = "".join(f" <span class=\"ship\">ships: {escape(p)}</span>" for p in f.ships)
    label = f"<td class=\"name\" title=\"{escape(f.artifact)}\">{escape(f.label)}{ship}</td>"
    tds = "".join(_cell(index, c, notes) for c in f.cells)
    css = " class=\"ships\"" if f.ships else ""
    return f"<tr{css}>{label}{tds}</tr>\n"


def _cell(index: int, c: Cell, notes: dict[str, int]) -> str:
    title = f" title=\"{escape(c.detail)}\"" if c.detail else ""
    if c.failed:
        n = notes[c.detail]
        ref = f"<sup><a href=\"#fn-{index}-{n}\">{n}</a></sup>"
        return f"<td class=\"failed\"{title}>failed{ref}</td>"
    sub = f"<small>{escape(c.sub)}</small>" if c.sub else ""
    return f"<td{title}>{escape(c.text)}{sub}</td>"


def _footnotes(index: int, notes: dict[str, int]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li id=\"fn-{index}-{n}\">{escape(reason)}</li>" for reason, n in notes.items())
    return f"<ol class=\"footnotes\">{items}</ol>"


def _compression(rows: list[list[str]]) -> str:
    return _text_section("compression", "Compression-aware students", COMPRESSION_INTRO, COMPRESSION_HEADERS,
                         rows)


def _dropped(rows: list[list[str]]) -> str:
    return _text_section("dropped", "Files not kept", DROPPED_INTRO, DROPPED_HEADERS, rows)


def _text_section(section: str, title: str, intro: str, headers, rows: list[list[str]]) -> str:
    """A section holding one table of text cells (none when there are no rows)."""
    if not rows:
        return ""
    header = "".join(f"<th class=\"name\">{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td class=\"name\">{escape(c)}</td>" for c in r) + "</tr>\n"
                   for r in rows)
    return (f"<section id=\"{section}\">\n<h2>{escape(title)}</h2>\n<p class=\"muted\">{escape(intro)}</p>\n"
            f"<table>\n<tr>{header}</tr>\n{body}</table>\n</section>")


# --- 3. Pareto plots ------------------------------------------------------------------------------

def _plots(plots: dict[str, bytes | None]) -> str:
    intro = ("<p class=\"muted\">Colour is the format, marker the student. Labelled points are the Pareto "
             "front: no other file is both cheaper and retains more.</p>")
    figures = []
    for heading, png in plots.items():
        figures.append(f"<h3>{escape(heading)}</h3>")
        if png is None:
            figures.append("<p class=\"muted\">Nothing to plot: no successful row has both numbers "
                           "(retention needs the teacher's accuracy).</p>")
            continue
        data = base64.b64encode(png).decode("ascii")
        figures.append(f"<img alt=\"{escape(heading)}\" src=\"data:image/png;base64,{data}\">")
    return f"<section id=\"plots\">\n<h2>Trade-offs</h2>\n{intro}\n" + "\n".join(figures) + "\n</section>"


# --- 4. every row, collapsed ----------------------------------------------------------------------

def _full_table(full: list[list[str]]) -> str:
    header = "".join(f"<th>{escape(h)}</th>" for h in HEADERS)
    body = "".join(f"<tr>{_full_cells(r)}</tr>\n" for r in full)
    summary = f"<summary>All {len(full)} bench rows</summary>"
    details = f"<details>{summary}\n<table>\n<tr>{header}</tr>\n{body}</table>\n</details>"
    return f"<section id=\"all-rows\">\n<h2>All rows</h2>\n{details}\n</section>"


def _full_cells(cells_: list[str]) -> str:
    names = "".join(f"<td class=\"name\">{escape(c)}</td>" for c in cells_[:FIRST_NUMBER])
    rest = cells_[FIRST_NUMBER:]
    if len(rest) == 1:  # a failed row: its reason spans the number columns
        span = len(HEADERS) - FIRST_NUMBER
        return f"{names}<td class=\"name failed\" colspan=\"{span}\">{escape(rest[0])}</td>"
    return names + "".join(f"<td>{escape(c)}</td>" for c in rest)
