"""The search stage: students and KD settings under device budgets (Optuna), and the ladder it yields."""

from edgekd.search.ladder import write_ladder
from edgekd.search.stage import search

__all__ = ["search", "write_ladder"]
