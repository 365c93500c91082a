"""Distillation stage: check or train the teacher, then train students against it."""

from edgekd.distill.stage import distill_student, prepare_teacher

__all__ = ["prepare_teacher", "distill_student"]
