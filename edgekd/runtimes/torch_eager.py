"""PyTorch eager on the checkpoint itself: the reference every exported file is compared with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekd.inputs import is_tokens
from edgekd.runtimes import RUNNERS


@RUNNERS.register("torch")
class TorchRunner:
    name = "torch-eager"
    measures_latency = True

    def __init__(self, path: Path, threads: int = 1):
        from edgekd.checkpoint import load_checkpoint
        from edgekd.models import WithProbabilities

        _, model = load_checkpoint(path)
        self.model = WithProbabilities(model).eval()
        self.version, self.threads = f"torch {torch.__version__}", threads

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return self.model(torch.from_numpy(x if is_tokens(x) else x.astype(np.float32))).numpy()

    @torch.no_grad()
    def run_one(self, x: np.ndarray) -> None:
        self.model(torch.from_numpy(x))
