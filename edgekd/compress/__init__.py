"""The compress step (between distill and export): fine-tuning on the file's grid with the KD loss."""

from edgekd.compress.stage import MODES, compress_job, compress_student, compressed_name

__all__ = ["MODES", "compress_job", "compress_student", "compressed_name"]
