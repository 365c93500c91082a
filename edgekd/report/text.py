"""The terminal view: the per-student matrices as aligned text, at most 110 columns wide.
Long target names wrap onto several header lines at their hyphens; when the latency columns still do
not fit, the matrix continues in a second block that repeats the file column."""

from __future__ import annotations

import re

from edgekd.report import cells
from edgekd.report import matrix as mx
from edgekd.types import Measurement

WIDTH = 110
GAP = "  "
WRAP = 10  # a header line is at most this wide unless one word is longer
FIXED = 1 + len(mx.METRICS)  # file, size, retention, agreement: repeated in every block


def text_table(rows: list[Measurement]) -> str:
    """Every student's matrix; failures are numbered in the cells and spelled out below each."""
    if not rows:
        return "no bench rows"
    blocks = [_student(m) for m in mx.build(rows, {})]
    return "\n\n".join(blocks)


def _student(m: mx.Matrix) -> str:
    notes = m.footnotes()
    heads = [["file"]] + [_header(c) for c in m.columns]
    body = [[f.label] + [_cell(c, notes) for c in f.cells] for f in m.files]
    lines = [f"{m.model}  (latency: p50 ms; blank: the file does not run there)"]
    for columns in _blocks(heads, body):
        lines += [""] + _grid([heads[i] for i in columns], [[r[i] for r in body] for i in columns])
    lines += [f"  [{n}] " + cells.short_reason(reason, WIDTH - 8) for reason, n in notes.items()]
    return "\n".join(lines)


def _header(c: mx.Column) -> list[str]:
    words = _wrap(c.name)
    return words + ["(CPU only)"] if "CPU only" in c.note else words


def _wrap(name: str) -> list[str]:
    """Break at spaces and after hyphens: "snapdragon-8-gen3-hexagon" -> snapdragon- / 8-gen3- / hexagon."""
    pieces = [p for p in re.split(r"(?<=-)|\s+", name) if p]
    lines: list[str] = []
    for piece in pieces:
        joiner = "" if lines and lines[-1].endswith("-") else " "
        if lines and len(lines[-1] + joiner + piece) <= WRAP:
            lines[-1] += joiner + piece
        else:
            lines.append(piece)
    return lines


def _cell(c: mx.Cell, notes: dict[str, int]) -> str:
    return f"failed[{notes[c.detail]}]" if c.failed else c.text


def _blocks(heads: list[list[str]], body: list[list[str]]) -> list[list[int]]:
    """Column indices per block: the fixed columns, then as many latency columns as fit."""
    widths = [max(len(s) for s in [*heads[i], *(r[i] for r in body)]) for i in range(len(heads))]
    fixed = list(range(min(FIXED, len(heads))))
    used = sum(widths[i] + len(GAP) for i in fixed)
    blocks, current, room = [], [], WIDTH - used
    for i in range(len(fixed), len(heads)):
        if current and widths[i] + len(GAP) > room:
            blocks.append(fixed + current)
            current, room = [], WIDTH - used
        current.append(i)
        room -= widths[i] + len(GAP)
    return blocks + [fixed + current]


def _grid(heads: list[list[str]], columns: list[list[str]]) -> list[str]:
    widths = [max(len(s) for s in [*h, *col]) for h, col in zip(heads, columns, strict=True)]
    depth = max(len(h) for h in heads)
    padded = [[""] * (depth - len(h)) + h for h in heads]  # headers sit on the rule line
    out = [_line([p[k] for p in padded], widths) for k in range(depth)]
    out.append(GAP.join("-" * w for w in widths))
    out += [_line([col[r] for col in columns], widths) for r in range(len(columns[0]))]
    return out


def _line(values: list[str], widths: list[int]) -> str:
    first = values[0].ljust(widths[0])
    rest = [v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True)]
    return GAP.join([first, *rest]).rstrip()

