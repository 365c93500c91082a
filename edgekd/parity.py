"""Parity: how closely a file's outputs reproduce a reference's. One helper for every format and every
stage: export checks a new file against PyTorch, `edgekd verify` re-runs a bundle's file against the
outputs recorded when it was bundled. It lives outside the stages so that both can use it."""

from __future__ import annotations

import numpy as np

from edgekd.metrics import wilson_interval
from edgekd.types import Parity


def measure_parity(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    """reference, candidate: (N, C) outputs on the same inputs (PyTorch's and the exported file's, or the
    recorded and the re-run ones)."""
    ref = np.asarray(reference, np.float64)
    out = np.asarray(candidate, np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {out.shape}")
    diff = out - ref
    num = (ref * out).sum(axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = float(np.mean(np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)))
    noise = float((diff ** 2).sum())
    snr_db = float("inf") if noise == 0 else float(10 * np.log10((ref ** 2).sum() / noise))
    agree = int((ref.argmax(1) == out.argmax(1)).sum())
    return Parity(top1_agreement=agree / len(ref), max_abs_diff=float(np.abs(diff).max()), cosine=cosine,
                  snr_db=min(snr_db, 999.0), n=len(ref), top1_ci95=wilson_interval(agree, len(ref)))


def parity_failure(parity: Parity, min_top1: float, max_abs_diff: float | None = None) -> str | None:
    """Why a file fails its threshold, or None.

    The threshold is on the file's true agreement, which `n` inputs only estimate: a file fails when
    the whole 95% interval lies below `min_top1` (it is wrong, not unlucky in which inputs flipped). A
    threshold of 1.0 still needs every input to agree (the interval's top is then below 1)."""
    upper = parity.top1_ci95[1] if parity.top1_ci95 is not None else parity.top1_agreement
    if min_top1 >= 1.0:
        upper = parity.top1_agreement
    if not upper >= min_top1:  # `not >=` so that NaN fails too
        lo, hi = parity.top1_ci95 or (float("nan"), float("nan"))
        return (f"top-1 agreement {parity.top1_agreement:.4f} (95% interval {lo:.4f}-{hi:.4f}, n={parity.n}) "
                f"< required {min_top1} (max abs diff {parity.max_abs_diff:.3g}, cosine {parity.cosine:.5f}, "
                f"SNR {parity.snr_db:.1f} dB)")
    if max_abs_diff is not None and not parity.max_abs_diff <= max_abs_diff:
        return f"max abs diff {parity.max_abs_diff:.3g} > allowed {max_abs_diff} (n={parity.n})"
    return None
