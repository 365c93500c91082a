"""report.md: the same page as report.html in the same order (verdict, matrices, plots, all rows),
for a pull request or a terminal pager. Plots are linked PNG files beside it."""

from __future__ import annotations

from html import escape

from edgekd.report import cells
from edgekd.report.compression import HEADERS as COMPRESSION_HEADERS
from edgekd.report.compression import INTRO as COMPRESSION_INTRO
from edgekd.report.dropped import HEADERS as DROPPED_HEADERS
from edgekd.report.dropped import INTRO as DROPPED_INTRO
from edgekd.report.headline import NOT_RUN, Headline, PlatformOutcome
from edgekd.report.matrix import Cell, Matrix
from edgekd.report.table import HEADERS


def render(title: str, teacher_accuracy: float | None, head: Headline, matrices: list[Matrix],
           plots: dict[str, str | None], full: list[list[str]], compression: list[list[str]] = (),
           dropped: list[list[str]] = ()) -> str:
    """`plots` maps a heading to its PNG file name (None: nothing to plot)."""
    teacher = "unknown" if teacher_accuracy is None else f"{teacher_accuracy:.4f}"
    lines = [f"# {_md(title)}", "", f"Teacher accuracy {teacher}. Retention is a file's accuracy over the "
             "teacher's (1.0 = as good as the teacher); latencies are p50.", ""]
    lines += _verdict(head)
    lines += ["## Students", ""]
    for m in matrices:
        lines += _matrix(m)
    lines += _text_section("Compression-aware students", COMPRESSION_INTRO, COMPRESSION_HEADERS, compression)
    lines += _text_section("Files not kept", DROPPED_INTRO, DROPPED_HEADERS, dropped)
    lines += ["## Trade-offs", "", "Labelled points are the Pareto front.", ""]
    for heading, name in plots.items():
        lines += [f"![{heading}]({name})" if name else f"{heading}: nothing to plot.", ""]
    lines += _full_table(full)
    return "\n".join(lines) + "\n"


def _text_section(title: str, intro: str, headers, rows: list[list[str]]) -> list[str]:
    """A section holding one table of text cells (none when there are no rows)."""
    if not rows:
        return []
    return [f"## {title}", "", intro, "", "| " + " | ".join(headers) + " |", "|---" * len(headers) + "|",
            *("| " + " | ".join(_md(c) for c in r) + " |" for r in rows), ""]


def _verdict(head: Headline) -> list[str]:
    lines = [f"## Release gate: {head.status}", ""]
    if head.status == NOT_RUN:
        lines += ["The gate has not run: nothing has been chosen to ship yet.", ""]
    if head.platforms:
        lines += ["| platform | ships | format/quant | size | retention |", "|---|---|---|---|---|"]
        lines += [_platform_line(p) for p in head.platforms]
        lines.append("")
        for p in head.platforms:
            lines += [f"- **{_md(p.platform)}** `{r.name}`: {_md('; '.join(r.rules))}" for r in p.rejected]
    lines += [f"- note: {_md(n)}" for n in head.notes]
    return lines + [""]


def _platform_line(p: PlatformOutcome) -> str:
    if p.ships is None:
        why = "nothing passes (rules below)" if p.rejected else "nothing to ship (no candidate files)"
        return f"| {_md(p.platform)} | {why} | | | |"
    return (f"| {_md(p.platform)} | **{_md(p.ships)}** | {_md(p.label)} | {cells.size(p.size_bytes)} | "
            f"{cells.ratio(p.retention)} |")


def _matrix(m: Matrix) -> list[str]:
    notes = m.footnotes()
    heads = [f"{c.name} ({c.note})" if c.note else c.name for c in m.columns]
    lines = [f"### {_md(m.model)}", "", "| file | " + " | ".join(_md(h) for h in heads) + " |",
             "|---" * (len(heads) + 1) + "|"]
    for f in m.files:
        ships = "".join(f" (ships: {p})" for p in f.ships)
        row = [_md(f.label + ships), *(_cell(c, notes) for c in f.cells)]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += [f"{n}. {_md(reason)}" for reason, n in notes.items()]
    return lines + ([""] if notes else [])


def _cell(c: Cell, notes: dict[str, int]) -> str:
    if c.failed:
        return f"failed ({notes[c.detail]})"
    return _md(f"{c.text} ({c.sub})" if c.sub else c.text)


def _full_table(full: list[list[str]]) -> list[str]:
    lines = ["## All rows", "", f"<details><summary>All {len(full)} bench rows</summary>", "",
             "| " + " | ".join(HEADERS) + " |", "|---" * len(HEADERS) + "|"]
    for r in full:
        padded = r + [""] * (len(HEADERS) - len(r))
        lines.append("| " + " | ".join(_md(c) for c in padded) + " |")
    return lines + ["", "</details>"]


def _md(text: str) -> str:
    """Text for a Markdown line: no pipes, no line breaks, no raw HTML (GitHub renders entities)."""
    return escape(" ".join(text.replace("|", "/").split()), quote=False)
