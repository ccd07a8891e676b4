"""A running study's progress on stderr, for the CLI and the Python API alike.

A header (the strategy, pruner, objective, budget and store), then a live bar:
trials finished of planned, running, pruned, failed, interrupted, the best value
and the time elapsed. Off a terminal (a log, CI) the bar gives way to a line a
trial; in a notebook the bar is a widget (with ipywidgets), else the lines.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tuner.trial.metrics import fmt

OnStart = Callable[[Any, Any], None]
OnProgress = Callable[[Any], None]


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def objectives(spec: Any) -> str:
    """The header's objective: "minimize val_loss", or each of several, which form a Pareto front."""
    named = ", ".join(f"{o.resolved_direction} {o.metric}" for o in spec.objectives or (spec.objective,))
    return f"{named} (Pareto front)" if spec.multi_objective else named


def wanted(console: Console | None = None) -> bool:
    """Whether progress shows by default: stderr is a terminal, or this runs in a notebook."""
    console = console or Console(stderr=True)
    return console.is_terminal or console.is_jupyter


class Display:
    """The header and the bar; ``with Display() as (on_start, on_progress)`` shows them while a study runs."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        # A live bar where it can redraw: a terminal, or a notebook with ipywidgets (rich's Jupyter bar).
        self.live = self.console.is_terminal or (
            self.console.is_jupyter and importlib.util.find_spec("ipywidgets") is not None)
        self.bar = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=self.console, transient=False,
        )
        self.task: Any = None
        self.finished = 0

    def __enter__(self) -> tuple[OnStart, OnProgress]:
        if not self.quiet and (self.live or not self.console.is_jupyter):
            self.bar.start()  # off a terminal it prints once, at the end
        return self.on_start, self.on_progress

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def on_start(self, spec: Any, study: Any) -> None:
        if self.quiet:
            return
        plan = study.plan
        steps = count(spec.epochs, 'epoch') if spec.epochs is not None else 'steps per trial unknown (no epochs=)'
        said = escape(f"{plan.description} · {plan.pruner_description} · {objectives(spec)} · "
                      f"{count(plan.trials, 'trial')}, {spec.parallel} in parallel, {steps} · "
                      f"store {study.store.safe_url}")  # a URL's [::1] or [/] is text, never markup
        self.bar.console.print(f"study [bold]{escape(study.name)}[/] · {said}", highlight=False)

    def on_progress(self, p: Any) -> None:
        if self.quiet:
            return
        best = f"front {len(p.front)}" if p.front else f"best {fmt(p.best_value)}"
        stopped = f" · interrupted {p.interrupted}" if p.interrupted else ""
        status = f"running {p.running} · pruned {p.pruned} · failed {p.failed}{stopped} · {best}"
        if not self.live and p.finished > self.finished:  # a log or CI: no live bar, a line a trial
            self.finished = p.finished
            self.console.print(f"trials {p.finished}/{p.planned} · complete {p.complete} · {status} · "
                               f"{p.elapsed:.0f} s", highlight=False)
        if self.task is None:
            self.task = self.bar.add_task("trials", total=p.planned, status=status)
        self.bar.update(self.task, completed=p.finished, total=p.planned, status=status)


@contextlib.contextmanager
def shown(progress: bool | None, on_start: OnStart | None = None, on_progress: OnProgress | None = None
          ) -> Iterator[tuple[OnStart | None, OnProgress | None]]:
    """``on_start`` and ``on_progress``, each also feeding the display when ``progress`` is on (None: when
    :func:`wanted`): what ``tuner.launch`` and ``tuner.resume`` run a study with."""
    if not (wanted() if progress is None else progress):
        yield on_start, on_progress
        return
    with Display() as (show_start, show_progress):
        yield _both(show_start, on_start), _both(show_progress, on_progress)


def _both(shown: Callable[..., None], given: Callable[..., None] | None) -> Callable[..., None]:
    if given is None:
        return shown

    def both(*args: Any) -> None:
        shown(*args)
        given(*args)

    return both
