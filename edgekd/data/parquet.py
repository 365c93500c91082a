"""Parquet tables (read with pyarrow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.data.checks import existing
from edgekd.data.source import DATASETS, RawData
from edgekd.data.table import check_finite, class_ids, label_column_index, to_raw
from edgekd.errors import InputError


@DATASETS.register("parquet")
def parquet_table(path: Path | None = None, seed: int = 42, *, label_column: str = "label") -> RawData:
    """Numeric feature columns (integer, float or boolean) plus `label_column`; see edgekd.data.table."""
    path = existing(path, "file", "parquet", "a .parquet file")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("dataset 'parquet' needs pyarrow: pip install pyarrow") from None
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path}: not a readable Parquet file ({e}); write it again "
                         "(pandas: df.to_parquet)") from None
    columns = list(table.column_names)
    li = label_column_index(path, columns, label_column)
    if table.num_rows == 0:
        raise InputError(f"{path}: 0 rows; a table needs one row per sample")
    features = [c for i, c in enumerate(columns) if i != li]
    x = np.empty((table.num_rows, len(features)), np.float64)
    for c, name in enumerate(features):
        col = table.column(name)
        t = col.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise InputError(f"{path}: column {name!r} holds {t} values; feature columns must be numbers: "
                             "encode it as numbers or drop the column")
        _no_nulls(col, path, name)
        x[:, c] = col.to_numpy(zero_copy_only=False)
    check_finite(x, path, features, lambda r: f"row {r} (counting from 0)")
    label = table.column(label_column)
    _no_nulls(label, path, label_column)
    values = label.to_pylist()
    if pa.types.is_floating(label.type):
        whole = [v for v in values if float(v).is_integer()]
        if len(whole) != len(values):
            raise InputError(f"{path}: column {label_column!r} holds non-integer numbers; class labels "
                             "must be integer ids 0..C-1 or names")
        values = [int(v) for v in values]
    ids, names = class_ids(values, path, label_column)
    return to_raw(x, ids, names, seed)


def _no_nulls(col, path: Path, name: str) -> None:
    if col.null_count:
        row = int(np.argmax(col.is_null().to_numpy(zero_copy_only=False)))
        raise InputError(f"{path}: column {name!r} has {col.null_count} missing value(s) (first in row "
                         f"{row}, counting from 0); fill or drop them")
