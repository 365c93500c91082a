"""The search's storage and its workers, on Optuna's RDB storage (SQLite in the run folder by default, or
any SQLAlchemy URL, e.g. PostgreSQL, that many workers on many machines share).

One study per budget (a rung): its sampler learns where that budget's best student lies; the pruner
stops a trial only when it can no longer become the best of any budget it could meet (edgekd.search.pruner).
Every trial is measured on every budget, so the ladder ranks
all of them for each rung.
Workers claim trials until the studies together hold the number asked for; a worker that dies leaves a
trial whose heartbeat stops, and the next worker to look marks it failed and runs another.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

from edgekd.errors import CheckFailed, InputError
from edgekd.types import Budget

PREFIX = "edgekd"
HEARTBEAT_S = 30  # a running trial's heartbeat period; one silent for twice that is failed


def study_name(recipe_name: str, budget: Budget) -> str:
    return f"{PREFIX}:{recipe_name}:{budget.key}"


def normalise_url(url: str) -> str:
    """PostgreSQL through psycopg 3 (the driver edgekd installs) when the URL names no driver."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def describe_url(url: str) -> str:
    """Where a storage URL points, without its password: host:port/db, or the SQLite file."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:  # noqa: BLE001 - reported as not a URL by open_storage
        return url
    if u.get_backend_name() == "sqlite":
        return f"SQLite file {u.database}"
    return f"{u.get_backend_name()} at {u.host or 'localhost'}:{u.port or 'default port'}/{u.database or ''}"


def masked_url(url: str | None) -> str | None:
    """The URL as it may be written to a file: its password replaced by ***."""
    from sqlalchemy.engine import make_url

    if url is None:
        return None
    try:
        return make_url(normalise_url(url)).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: open_storage says so
        return url


def open_storage(url: str, heartbeat_s: int):
    """Optuna's RDB storage at `url`, reached now (an unreachable server is an InputError naming its host
    and port). Trials send a heartbeat every `heartbeat_s`; one silent for 2x that is failed."""
    import optuna
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    url = normalise_url(url)
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        raise InputError(
            f"--storage {url!r} is not a database URL; give e.g. sqlite:///study.db or "
            "postgresql://user@host:5432/db"
        ) from None
    connect = {"timeout": 60} if backend == "sqlite" else {"connect_timeout": 10}
    try:
        with _no_experimental_warnings():  # heartbeats are "experimental" in Optuna since 2.9
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs={"connect_args": connect},
                heartbeat_interval=heartbeat_s,
                grace_period=2 * heartbeat_s,
            )
    except (SQLAlchemyError, ImportError) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:200]
        raise InputError(
            f"--storage: cannot reach the study storage ({describe_url(url)}): {reason}; "
            "start the database server or correct the URL"
        ) from None


@dataclass(frozen=True)
class StudyKey:
    """What makes trials of two searches comparable: the recipe's training inputs and the size limit."""

    recipe_sha256: str
    max_size_bytes: int | None


def open_studies(
    storage,
    recipe_name: str,
    budgets: list[Budget],
    key: StudyKey,
    *,
    space,
    seed: int,
    worker: int = 0,
    create: bool = True,
) -> list:
    """One study per budget, created or resumed. A study of the same name made from another recipe (or
    another size limit) is refused: its trials would not answer this search."""
    import optuna

    from edgekd.search.pruner import LadderPruner

    studies = []
    ladder_pruner = LadderPruner(budgets, key.max_size_bytes, n_min_trials=space.pruner_startup_trials)
    for i, (b, existing) in enumerate(zip(budgets, check_studies(storage, recipe_name, budgets, key))):
        name = study_name(recipe_name, b)
        if existing is None and not create:
            raise InputError(f"no study {name!r} in {describe_url(storage.url)}; run `edgekd search` first")
        n_before = len(existing.trials) if existing is not None else 0
        # constrained by each trial's own set_constraint (edgekd.search.trial)
        sampler = optuna.samplers.TPESampler(
            n_startup_trials=space.startup_trials, seed=sampler_seed(seed, i, worker, n_before)
        )
        pruner = ladder_pruner if space.pruner == "ladder" else optuna.pruners.NopPruner()
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction="maximize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        if existing is None:
            study.set_user_attr("recipe_sha256", key.recipe_sha256)
            study.set_user_attr("max_size_bytes", key.max_size_bytes)
            study.set_user_attr("budget", b.__dict__)
        studies.append(study)
    ladder_pruner.studies = studies  # it compares a trial with the finished trials of every rung
    return studies


def check_studies(storage, recipe_name: str, budgets: list[Budget], key: StudyKey) -> list:
    """Each budget's study already in the storage (None where there is none), refused if it came from
    another recipe or size limit; creates nothing (the search checks this before it trains the teacher,
    and creates the studies only once the teacher is there)."""
    found = []
    for b in budgets:
        existing = _existing(storage, study_name(recipe_name, b))
        if existing is not None:
            check_same(existing, key, study_name(recipe_name, b), storage)
        found.append(existing)
    return found


def sampler_seed(seed: int, rung: int, worker: int, trials_before: int) -> int:
    """A sampler seed per (recipe seed, rung, machine, worker, trials so far): reproducible for a given
    history on a given machine, while two workers, two machines or a resumed search never draw the same
    random trials."""
    import socket
    import zlib

    return zlib.crc32(repr((seed, rung, socket.gethostname(), worker, trials_before)).encode())


def _existing(storage, name: str):
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def check_same(study, key: StudyKey, name: str, storage) -> None:
    attrs = study.user_attrs
    if attrs.get("recipe_sha256") not in (None, key.recipe_sha256):
        raise InputError(
            f"the storage ({describe_url(storage.url)}) already holds study {name!r} from another "
            "recipe of the same name (its data, teacher, distill, export or search settings "
            "differ); rename the recipe (`name:`) or give another --storage"
        )
    if attrs.get("max_size_bytes") != key.max_size_bytes:

        def limit(v):
            return "no --max-size-bytes" if v is None else f"--max-size-bytes {v}"

        raise InputError(
            f"study {name!r} was run with {limit(attrs.get('max_size_bytes'))}; this search has "
            f"{limit(key.max_size_bytes)}: give the same limit or another --storage"
        )


def counts(study) -> tuple[int, int]:
    """(finished, running) trials of a study, after failing those whose worker stopped beating. Trials
    waiting in the queue (`enqueue_trial`) are neither: the next trial a worker starts takes one."""
    import optuna
    from optuna.trial import TrialState

    with _no_experimental_warnings():
        optuna.storages.fail_stale_trials(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    finished = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
    return finished, sum(s == TrialState.RUNNING for s in states)


def work(
    studies: list,
    budgets: list[Budget],
    objective,
    n_trials: int,
    heartbeat_s: int,
    progress=print,
    max_failures: int = 5,
) -> int:
    """Run trials until the studies together hold `n_trials` finished ones (complete or pruned); each
    next trial goes to the rung with the fewest. A trial of a dead worker is failed once its heartbeat is
    stale, and does not count. With K workers the studies may end with up to K - 1 trials more than asked
    (each checks the count before it starts one). A trial that raises is recorded as failed with its
    error and the search goes on, unless `max_failures` fail in a row. Returns the trials this worker ran."""
    from optuna.exceptions import UpdateFinishedTrialError

    ran, failures_in_row = 0, 0
    while True:
        tally = [counts(s) for s in studies]
        finished, running = sum(f for f, _ in tally), sum(r for _, r in tally)
        if finished >= n_trials:
            return ran
        if finished + running >= n_trials:  # the rest are claimed: wait for them (or for them to go stale)
            time.sleep(max(1, heartbeat_s / 2))
            continue
        i = min(range(len(studies)), key=lambda j: sum(tally[j]))
        mine = []  # this worker's trial (another worker's may land in the study meanwhile)
        try:
            studies[i].optimize(
                _recording_errors(objective, budgets[i]),
                n_trials=1,
                catch=(Exception,),
                callbacks=[lambda study, frozen: mine.append(frozen)],
                gc_after_trial=False,
            )
        except UpdateFinishedTrialError:
            # this trial's heartbeat went stale (a stalled write) and another worker failed it meanwhile
            progress(f"a trial on {budgets[i].key} was failed by another worker (its heartbeat went "
                     f"stale); raise --heartbeat-s if this repeats")
        ran += 1
        if mine:
            progress(_line(mine[0], budgets[i], sum(counts(s)[0] for s in studies), n_trials))
        failed = not mine or mine[0].state.name == "FAIL"
        failures_in_row = failures_in_row + 1 if failed else 0
        if failures_in_row >= max_failures:
            raise CheckFailed(
                f"{max_failures} trials in a row failed (the last on {budgets[i].key}); see their errors "
                "above, and narrow the search ranges (e.g. a lower lr)"
            )


def _recording_errors(objective, budget: Budget):
    """The objective for one rung; an error it raises is kept on the trial (user attribute `error`)."""
    import optuna

    def run(trial):
        try:
            return objective(trial, budget)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
            raise

    return run


@contextmanager
def _no_experimental_warnings():
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _line(trial, budget: Budget, n: int, total: int) -> str:
    s = trial.user_attrs.get("student", {})
    what = (
        (
            f"{s.get('arch')} x{s.get('width')} d{s.get('depth') or '-'} T={s.get('temperature')} "
            f"a={s.get('alpha')} lr={s.get('lr')} {s.get('epochs')}ep"
        )
        if s
        else ""
    )
    if trial.state.name == "FAIL":
        value = f" ({trial.user_attrs.get('error', 'failed').splitlines()[0][:160]})"
    elif trial.state.name == "PRUNED":
        steps = trial.intermediate_values
        value = f" (teacher agreement {steps[max(steps)]:.3f})" if steps else ""
    else:
        value = "" if trial.value is None else f" retention {trial.value:.4f}"
    return (
        f"[{n}/{total}] {budget.key} #{trial.number} {trial.state.name.lower()}{value}: {what} "
        f"({trial.user_attrs.get('outcome', '')}, {trial.user_attrs.get('seconds', 0):.0f}s)"
    )
