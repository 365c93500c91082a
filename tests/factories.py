"""Small real checkpoints for export/bench tests: trained for a moment on real data."""

from pathlib import Path

from edgekd.checkpoint import save_checkpoint
from edgekd.data import load_dataset
from edgekd.distill.stage import seeded_model
from edgekd.distill.train import accuracy, train
from edgekd.types import ModelSpec


def make_checkpoint(path: Path, arch: str = "cnn1d", dataset: str = "mnist1d", width: float = 0.15,
                    depth: int | None = None, epochs: int = 10, name: str = "student",
                    teacher_accuracy: float | None = 0.99) -> Path:
    data = load_dataset(dataset)
    model = seeded_model(ModelSpec.zoo(arch, width, depth), data, 0)
    if epochs:
        train(model, data.x_train, data.y_train, epochs=epochs, batch_size=128, lr=3e-3, weight_decay=0.0,
              seed=0)
    save_checkpoint(model, path, name=name, role="student", arch=arch, width=width, depth=depth,
                    input_shape=data.input_shape, labels=data.labels, mean=data.mean, std=data.std,
                    data_fingerprint=data.fingerprint, accuracy=accuracy(model, data.x_test, data.y_test),
                    provenance={"data": data.source, "teacher_accuracy": teacher_accuracy})
    return path
