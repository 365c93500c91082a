"""Parity: how closely an exported file reproduces PyTorch. One helper for every format."""

from __future__ import annotations

import numpy as np

from edgekd.types import Parity


def measure_parity(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    """reference, candidate: (N, C) outputs of PyTorch and of the exported file on the same inputs."""
    ref = np.asarray(reference, np.float64)
    out = np.asarray(candidate, np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"output shapes differ: PyTorch {ref.shape}, exported file {out.shape}")
    diff = out - ref
    num = (ref * out).sum(axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = float(np.mean(np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)))
    noise = float((diff ** 2).sum())
    snr_db = float("inf") if noise == 0 else float(10 * np.log10((ref ** 2).sum() / noise))
    return Parity(top1_agreement=float((ref.argmax(1) == out.argmax(1)).mean()),
                  max_abs_diff=float(np.abs(diff).max()), cosine=cosine, snr_db=min(snr_db, 999.0), n=len(ref))


def parity_failure(parity: Parity, min_top1: float, max_abs_diff: float | None = None) -> str | None:
    """Why a file fails its threshold, or None."""
    if parity.top1_agreement < min_top1:
        return (f"top-1 agreement {parity.top1_agreement:.4f} < required {min_top1} "
                f"(max abs diff {parity.max_abs_diff:.3g}, cosine {parity.cosine:.5f}, SNR {parity.snr_db:.1f} dB, "
                f"n={parity.n})")
    if max_abs_diff is not None and parity.max_abs_diff > max_abs_diff:
        return f"max abs diff {parity.max_abs_diff:.3g} > allowed {max_abs_diff} (n={parity.n})"
    return None
