"""Export stage: PyTorch student -> Core ML, TFLite and ONNX files, each proven against PyTorch."""

from edgekd.export.stage import (
    ExportMisses,
    export_checkpoint,
    misses_table,
    plan_exports,
    required_agreement,
)

__all__ = ["ExportMisses", "export_checkpoint", "misses_table", "plan_exports", "required_agreement"]
