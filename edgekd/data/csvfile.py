"""Comma-separated tables with a header row (read with the standard library's csv module)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edgekd.data.checks import existing
from edgekd.data.source import DATASETS, RawData
from edgekd.data.table import check_finite, class_ids, ints_or_names, label_column_index, to_raw
from edgekd.errors import InputError


@DATASETS.register("csv")
def csv_table(path: Path | None = None, seed: int = 42, *, label_column: str = "label") -> RawData:
    """Numeric feature columns plus `label_column`; see edgekd.data.table."""
    path = existing(path, "file", "csv", "a .csv file with a header row")
    header, rows, lines = _read(path)
    li = label_column_index(path, header, label_column)
    features = [c for i, c in enumerate(header) if i != li]
    x = np.empty((len(rows), len(features)), np.float64)
    for r, (row, line) in enumerate(zip(rows, lines)):
        values = row[:li] + row[li + 1:]
        for c, value in enumerate(values):
            try:
                x[r, c] = float(value)
            except ValueError:
                what, fix = (("an empty cell", "fill it") if not value.strip() else
                             (f"non-numeric value {value.strip()[:40]!r}", "encode the column as numbers"))
                raise InputError(f"{path}: column {features[c]!r} holds {what} (row {r + 1}, line {line}); "
                                 f"feature columns must be numbers: {fix} or drop the column") from None
    check_finite(x, path, features, lambda r: f"row {r + 1}, line {lines[r]}")
    labels = [row[li].strip() for row in rows]
    for r, v in enumerate(labels):
        if not v:
            raise InputError(f"{path}: column {label_column!r} is empty in row {r + 1} (line {lines[r]}); "
                             "every row needs a class")
    ids, names = class_ids(ints_or_names(labels, path, label_column), path, label_column)
    return to_raw(x, ids, names, seed)


def _read(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, each row's line number); blank lines skipped, ragged rows refused."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: Excel's byte-order mark
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            rows, lines = [], []
            for row in reader:
                if not row or not any(v.strip() for v in row):
                    continue
                if len(row) != len(header):
                    raise InputError(f"{path}: line {reader.line_num} has {len(row)} fields but the header "
                                     f"has {len(header)}; every row needs one value per column")
                rows.append(row)
                lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: not a readable CSV file ({e}); save it as UTF-8, comma-separated, "
                         "with a header row") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror}); check its permissions") from None
    if not header:
        raise InputError(f"{path}: empty; a table needs a header row and one row per sample")
    if not rows:
        raise InputError(f"{path}: a header but no rows; a table needs one row per sample")
    return header, rows, lines
