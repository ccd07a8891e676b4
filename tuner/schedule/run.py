"""One run of a schedule, in its own process: ``python -m tuner.schedule.run RUN``.

The scheduler daemon starts this with the store's URL in ``TUNER_STORAGE``.
It launches the run's study (or resumes it, for a run that resumes an
interrupted one), seeded with the best configurations of the schedule's
previous successful run, and records how it ended. Whatever happens, the run
record ends succeeded, failed or interrupted: a spec that no longer
validates or a cluster that cannot be reached fails this run with the
reason, and the schedule fires again at its next time.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import TunerError
from tuner.schedule.book import Schedules
from tuner.schedule.secrets import study_storage
from tuner.store import Store
from tuner.store.models import RunRecord, ScheduleRecord


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return execute(Schedules(Store()), int(args[0]))


def execute(book: Schedules, run_id: int) -> int:
    """Run ``run_id`` to its end and record the outcome; the exit status says how it went."""
    run, sched = book.run(run_id)
    try:
        study, warm = _launch(book, run, sched)
    except KeyboardInterrupt:
        book.finish(run_id, "interrupted", reason="stopped while it ran (the scheduler was stopped)")
        return 130
    except TunerError as exc:
        book.finish(run_id, "failed", reason=str(exc))
        return 2
    except Exception as exc:  # a bug or a crash in the workload's setup: keep the schedule going
        traceback.print_exc()
        book.finish(run_id, "failed", reason=f"{type(exc).__name__}: {exc}")
        return 1
    why = study.why_no_result()
    if why is not None:  # a night with no result is a failed run, not a quiet success
        book.finish(run_id, "failed", warm_started=warm, reason=f"no trial completed: {why}",
                    **_outcome(book, run, study))
        return 1
    book.finish(run_id, "succeeded", warm_started=warm, **_outcome(book, run, study))
    return 0


def _launch(book: Schedules, run: RunRecord, sched: ScheduleRecord) -> tuple[Any, int]:
    import tuner

    storage = study_storage(sched.storage, book.store.url)
    where = {"storage": storage, "executor": sched.executor, "ray_address": sched.ray_address}
    if run.attempt > 1 and Store(storage).has_study(run.study):
        return tuner.resume(run.study, **where), 0
    source = _spec_source(sched)
    warm = _warm_start(book, run, sched, storage)
    return tuner.launch(source, study=run.study, warm_start=warm, **where), len(warm)


def _spec_source(sched: ScheduleRecord) -> Any:
    """The spec file as it is now (edits take effect), else the snapshot taken when the schedule was added."""
    path = Path(sched.spec_path)
    if path.is_file():
        return path
    snapshot = yaml.safe_load(sched.spec_text)
    if not isinstance(snapshot, dict):
        raise TunerError(f"schedule {sched.name!r}: {path} is gone and its snapshot is not a spec. "
                         f"Fix: `tuner schedule remove {sched.name}` and add it again with a spec file.")
    return snapshot


def _warm_start(book: Schedules, run: RunRecord, sched: ScheduleRecord, storage: str) -> list[dict[str, Any]]:
    """The best ``warm_start`` configurations of the previous successful run, best first."""
    if not sched.warm_start:
        return []
    previous = book.previous_success(run)
    store = Store(storage)
    if previous is None or not store.has_study(previous.study):
        return []
    from optuna.trial import TrialState

    study = store.load_study(previous.study)
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0
    done.sort(key=lambda t: sign * t.value)
    return [dict(t.params) for t in done[: sched.warm_start]]


def _outcome(book: Schedules, run: RunRecord, study: Any) -> dict[str, Any]:
    """Best value, completed trials, and the change against the previous successful run."""
    from optuna.trial import TrialState

    complete = study.optuna.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = study.best_value if complete else None
    previous = book.previous_success(run)
    change = None if best is None or previous is None else best - previous.best_value
    return {"best_value": best, "trials": len(complete), "change": change,
            "previous_run_id": previous.id if previous is not None else None}


if __name__ == "__main__":
    sys.exit(main())
