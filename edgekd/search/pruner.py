"""The search's pruner: stop a trial only when it trails, for every budget it could still meet, the
trials that met that budget.

Optuna's MedianPruner compares a trial with every finished trial of its study. For a ladder that is the
wrong crowd twice over (measured: benchmarks/search_ladder.py): students too large for the budget report
a high agreement early, then miss the budget, and a median over them stops the small students that can
meet it (-7.8 points on the A17 rung); and a trial run for one rung is ranked for every rung, so a
median over its own rung alone stopped the student that would have won another rung (-1.5 points). Here,
at a point of the schedule, the trial is compared per budget with the finished trials (of every rung)
whose files met that budget; a budget the simulator says it cannot meet is skipped; a budget with fewer
than `n_min_trials` such trials, or one whose median the trial reaches, keeps it running.
"""

from __future__ import annotations

import statistics

import optuna
from optuna.trial import TrialState

from edgekd.search.budgets import PRESCREEN_SLACK, FileResult, best_file
from edgekd.types import Budget


class LadderPruner(optuna.pruners.BasePruner):
    def __init__(self, budgets: list[Budget], max_size_bytes: int | None, n_min_trials: int):
        self.budgets, self.max_size_bytes, self.n_min_trials = list(budgets), max_size_bytes, n_min_trials
        self.studies: list[optuna.Study] = []  # every rung's study (set once they are all open)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value = trial.intermediate_values[step]
        predicted = trial.user_attrs.get("predicted_ms", {})
        done = [t for s in (self.studies or [study])
                for t in s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if step in t.intermediate_values]
        for b in self.budgets:
            if b.key in predicted and predicted[b.key] > PRESCREEN_SLACK * b.latency_ms:
                continue  # it cannot meet b: how others do there does not matter
            peers = [t.intermediate_values[step] for t in done if met(t, b, self.max_size_bytes)]
            if len(peers) < self.n_min_trials or value >= statistics.median(peers):
                return False  # it may yet be b's best student
        return True


def met(t: optuna.trial.FrozenTrial, budget: Budget, max_size_bytes: int | None) -> bool:
    """A file of the finished trial meets the budget."""
    files = [FileResult(**f) for f in t.user_attrs.get("files", [])]
    return best_file(files, budget, max_size_bytes) is not None
