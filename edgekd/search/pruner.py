"""The search's pruner: a median rule against the rung's trials that met its budget.

Optuna's MedianPruner compares a trial with every finished trial of its study. In a rung that is the
wrong crowd: students too large for the budget report a high agreement early and then miss the budget,
and a median over them stops the small students that are the only ones that can meet it (measured:
benchmarks/search_ladder.py, where it cost the A17 rung 7.8 points of retention). Here the median at a
point of the schedule is taken over complete trials that met the budget (Optuna constraint <= 0) and
reported at that point; with fewer than `n_min_trials` of them nothing is stopped.
"""

from __future__ import annotations

import statistics

import optuna
from optuna.trial import TrialState


class FeasibleMedianPruner(optuna.pruners.BasePruner):
    def __init__(self, n_min_trials: int):
        self.n_min_trials = n_min_trials

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        peers = [t.intermediate_values[step]
                 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if step in t.intermediate_values and feasible(t)]
        if len(peers) < self.n_min_trials:
            return False
        return trial.intermediate_values[step] < statistics.median(peers)


def feasible(t: optuna.trial.FrozenTrial) -> bool:
    """The trial met its rung's budget: every constraint it set is <= 0 (none set: not judged, so not a
    peer either)."""
    return bool(t.constraints) and all(v <= 0 for v in t.constraints.values())
