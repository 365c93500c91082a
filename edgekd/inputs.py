"""An exported graph's named inputs for a batch of edgekd inputs: one rule for every exporter and runner.

    float rows (N, *input_shape)          -> {"x": float32}
    token rows (N, 2, L) of integers      -> {"input_ids": int32 (N, L), "attention_mask": int32 (N, L)}

Token rows are the only integer inputs edgekd has (edgekd.data.text); every other source is normalised
float32.
"""

from __future__ import annotations

import numpy as np

TEXT_INPUTS = ("input_ids", "attention_mask")


def is_tokens(x) -> bool:
    """Token rows? (x: an array, a memory map, or anything with a dtype, e.g. a chain of them.)"""
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    return np.dtype(dtype).kind in "iu"


def named_inputs(x: np.ndarray) -> dict[str, np.ndarray]:
    x = np.asarray(x)
    if is_tokens(x):
        if x.ndim != 3 or x.shape[1] != 2:
            raise ValueError(f"token rows must be (N, 2, L) (ids, mask); got {x.shape}")
        return {name: np.ascontiguousarray(x[:, i], np.int32) for i, name in enumerate(TEXT_INPUTS)}
    return {"x": np.asarray(x, np.float32)}
