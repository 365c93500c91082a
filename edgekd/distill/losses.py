"""Distillation losses as pure functions. Numerics live here and nowhere else."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
            temperature: float, alpha: float) -> torch.Tensor:
    """Hinton, Vinyals & Dean 2015: `alpha * CE(s, y) + (1 - alpha) * T^2 * KL(p_t^T || p_s^T)`.

    student_logits, teacher_logits: (B, C). labels: (B,) int64; -1 marks an unlabeled (transfer) sample,
    which contributes only the KL term. CE is the mean over labelled samples, KL the mean over all.
    The T^2 factor keeps the soft-target gradients' scale independent of T.
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
    return alpha * ce_loss(student_logits, labels) + (1 - alpha) * t * t * kl


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled samples (labels >= 0); 0 when the batch has none. logits: (B, C)."""
    labelled = labels >= 0
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled], labels[labelled])


def hint_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
              projection: nn.Module) -> torch.Tensor:
    """FitNets (Romero et al. 2015): MSE between a learned projection of the student's features and the
    teacher's. student_features: (B, Ds); teacher_features: (B, Dt); projection maps Ds -> Dt."""
    return F.mse_loss(projection(student_features), teacher_features)


def cosine_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """DistilBERT (Sanh et al. 2019) cosine embedding loss: mean of 1 - cos(s, t) over the batch.
    student_features, teacher_features: (B, D), same D (project the student's first if they differ)."""
    return (1 - F.cosine_similarity(student_features, teacher_features, dim=-1)).mean()
