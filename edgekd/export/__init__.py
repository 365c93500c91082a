"""Export stage: PyTorch student -> Core ML, TFLite and ONNX files, each proven against PyTorch."""

from edgekd.export.stage import export_checkpoint, plan_exports

__all__ = ["export_checkpoint", "plan_exports"]
