"""Recurring sweeps: schedules in the store, and the daemon that fires them exactly once.

``book`` holds schedules and runs (``tuner_schedules``, ``tuner_runs``);
``daemon`` fires due schedules and watches their runs; ``run`` is one run,
in its own process; ``timing`` reads cron expressions in a timezone.
"""

from tuner.schedule.book import Schedules
from tuner.schedule.daemon import Scheduler

__all__ = ["Scheduler", "Schedules"]
