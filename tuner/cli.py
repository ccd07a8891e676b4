"""The ``tuner`` command: one small function per subcommand.

A user's mistake prints one clear message and exits with status 2 (``--debug``
shows the traceback); Ctrl-C exits with 130 and leaves no trial RUNNING.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import logging
import math
import os
import re
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Column, Table

from tuner.progress import Display
from tuner.progress import count as _count
from tuner.trial.metrics import fmt

# Piped output (CI logs, `| less`) without COLUMNS: laid out for this many columns, not rich's 80.
PIPED_WIDTH = 120


class _Unpadded:
    """sys.stdout or sys.stderr (looked up at each write, as rich does) for a console that is not a
    terminal: each line without the spaces rich pads it with (log lines, tables) or leaves where it
    wrapped, which a log file or CI keeps as trailing whitespace."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def stream(self) -> Any:
        return getattr(sys, self.name)

    def write(self, text: str) -> int:
        return self.stream.write(re.sub(r"[ \t]+(?=\n)", "", text))

    def __getattr__(self, attr: str) -> Any:  # flush, isatty, fileno, encoding: the stream's own
        return getattr(self.stream, attr)


def _console(name: str) -> Console:
    """A terminal's own width, or COLUMNS (as a terminal sets it), else PIPED_WIDTH, unpadded."""
    if getattr(sys, name).isatty():
        return Console(stderr=name == "stderr")
    return Console(file=_Unpadded(name), width=int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit()
                   else PIPED_WIDTH)


console = _console("stdout")
err = _console("stderr")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    # A spec's `workload: module:function` imports from the directory tuner runs in, as
    # under `python -m`; an installed console script puts only its own directory on sys.path.
    # (Ray workers on this machine get the same directory from the driver.)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    from tuner.errors import Terminated, TunerError

    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except TunerError as exc:
        shown = getattr(exc, "workload_traceback", None)
        if args.debug and shown:  # the workload's own traceback, not tuner's
            err.print(shown.rstrip(), highlight=False, markup=False, soft_wrap=True)
        elif args.debug:
            raise
        from rich.markup import escape

        # The message is plain text: brackets in it ("[y/N]", "tuner[postgres]") are not rich markup.
        err.print(f"[bold red]error:[/] {escape(f'{exc}{_debug_hint(args, exc)}')}", highlight=False, markup=True,
                  soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if Terminated.seen(exc):
            err.print("stopped by SIGTERM: running trials were marked FAIL; `tuner resume` continues the study.")
            return 143
        err.print("interrupted: running trials were marked FAIL; `tuner resume` continues the study.")
        return 130


def _debug_hint(args: argparse.Namespace, exc: Exception) -> str:
    """For a study whose trials all failed, the command that shows the workload's own traceback."""
    from tuner.errors import StudyFailedError

    if not isinstance(exc, StudyFailedError) or not exc.workload_traceback or args.debug:
        return ""
    if args.command == "launch":
        again = f"tuner launch {_quoted(args.spec)} --study {_quoted(exc.study + '-debug')} --executor inline --trials 1 --debug"
    else:
        again = f"tuner resume {_quoted(exc.study)} --debug"
    return f" To see its traceback, run: {again}"


def _quoted(text: str) -> str:
    import shlex

    return shlex.quote(str(text))


def _terminate(*_: Any) -> None:
    from tuner.errors import Terminated

    Terminated.received = True
    raise Terminated


# ---------------------------------------------------------------------- commands


def cmd_launch(args: argparse.Namespace) -> int:
    from tuner.api import launch_with
    from tuner.spec import Overrides

    overrides = Overrides.flags({
        "strategy": args.strategy, "pruner": args.pruner, "trials": args.trials, "parallel": args.parallel,
        "epochs": args.epochs, "seed": args.seed, "timeout": args.timeout,
    })
    warm = _warm_start_points(args)
    with _progress_display(args.quiet) as (on_start, on_progress):
        study = launch_with(
            args.spec, overrides, study=args.study, storage=args.storage, executor=args.executor,
            ray_address=args.ray_address, on_progress=on_progress, on_start=on_start, warm_start=warm,
            if_exists=_if_exists(args), given_as="flag",
        )
    return _print_result(study, args)


def _if_exists(args: argparse.Namespace) -> str:
    """--replace and --new-name as the API's if_exists."""
    return "replace" if args.replace else "new_name" if args.new_name else "error"


def _warm_start_points(args: argparse.Namespace) -> list[dict[str, Any]]:
    """--warm-start-from STUDY: the --warm-start K best configurations of that study, in the same store."""
    import tuner
    from tuner.errors import TunerError

    if args.warm_start_from is None:
        if args.warm_start is not None:
            raise TunerError("--warm-start: says how many configurations to take from --warm-start-from STUDY, "
                             "which is missing. Fix: add --warm-start-from STUDY, or drop --warm-start.")
        return []
    k = 5 if args.warm_start is None else args.warm_start
    if k < 1:
        raise TunerError(f"--warm-start: must be >= 1, but got {k}. Fix: e.g. --warm-start 5.")
    points = tuner.load(args.warm_start_from, args.storage).best_configurations(k)
    if not points:
        err.print(f"warm start: study {args.warm_start_from} has no completed trial; nothing to start from.",
                  highlight=False)
    return points


def cmd_resume(args: argparse.Namespace) -> int:
    from tuner.api import resume_with
    from tuner.spec import Overrides

    overrides = Overrides.flags({"trials": args.trials, "timeout": args.timeout})
    with _progress_display(args.quiet) as (_, on_progress):
        study = resume_with(
            args.study, overrides, storage=args.storage, executor=args.executor, ray_address=args.ray_address,
            on_progress=on_progress,
        )
    return _print_result(study, args)


def cmd_probe(args: argparse.Namespace) -> int:
    """The spec's lr range test: the range it found and a plot; with --narrow, then the study on that range."""
    from tuner import probe
    from tuner.spec import Overrides, Probe, load_spec

    spec = load_spec(args.spec)
    # The command is a probe whether or not the file asks for one: the spec is checked with its
    # probe settings (or the defaults), so a spec a probe cannot run on gets the spec's own refusal.
    settings = {**(spec.probe or Probe()).model_dump(), "narrow": args.narrow}
    plot = args.output or f"{spec.name}-probe.png"
    if not args.narrow:
        spec = load_spec(args.spec, {"probe": settings})
        found = probe.run(spec, spec.workload_target)
        console.print(found.summary(spec.name), highlight=False)
        err.print(f"wrote the plot to {found.save_png(plot, spec.name)}", highlight=False)
        return 0
    from tuner.api import launch_with

    # probe is the command's, not a flag's: a problem with it is the file's.
    overrides = Overrides({"probe": settings, "trials": args.trials, "timeout": args.timeout},
                          {"trials": "--trials", "timeout": "--timeout"})
    with _progress_display(args.quiet) as (on_start, on_progress):
        def started(spec: Any, study: Any) -> None:
            found = probe.Finding.from_evidence(study.optuna.user_attrs[probe.ATTR])
            err.print(f"wrote the plot to {found.save_png(plot, spec.name)}", highlight=False)
            on_start(spec, study)

        study = launch_with(args.spec, overrides, study=args.study, storage=args.storage, executor=args.executor,
                            ray_address=args.ray_address, on_progress=on_progress, on_start=started,
                            if_exists=_if_exists(args), given_as="flag")
    return _print_result(study, args)


def cmd_studies(args: argparse.Namespace) -> int:
    from optuna.trial import TrialState

    from tuner.store import Store, internals

    store = Store(args.storage, create=False)
    records = []
    for s in store.storage.get_all_studies():
        trials = store.storage.get_all_trials(internals.study_id(s), deepcopy=False)
        states = [t.state for t in trials]
        directions = [d.name.lower() for d in s.directions]
        several = len(directions) > 1
        records.append({
            "study": s.study_name, "direction": ", ".join(directions), "trials": len(trials),
            "complete": states.count(TrialState.COMPLETE), "failed": states.count(TrialState.FAIL),
            "best value": _front_size(store, s.study_name) if several else _best_value(trials, directions[0]),
        })
    columns = ["study", "direction", "trials", "complete", "failed", "best value"]
    return _emit(args, records, columns, title=store.safe_url)


def cmd_show(args: argparse.Namespace) -> int:
    import tuner

    study = tuner.load(args.study, args.storage)
    if args.trial is not None:
        return _show_epochs(study, args.trial)
    from tuner.report import collect_curves, sparkline
    from tuner.trial import record

    trials, front = _show_order(study)
    curves = collect_curves(study.epochs())
    metric = study.metric_names[0]
    records = []
    for t in trials:
        a = t.user_attrs
        records.append({
            "#": t.number, "state": t.state.name, "value": _value_cell(study, t), "best ep": a.get("best_epoch"),
            "gap": a.get("final_gap"), "curve": sparkline(_curve(study, t, curves.get(t.number, []), metric)),
            "diagnosis": a.get("diagnosis", ""), "epochs": a.get("epochs"), "seconds": a.get("wall_seconds"),
            "device": a.get("device", ""), "params": t.params,
            "stopped because": record.why_stopped(a),
            **({"pareto": t.number in front} if study.multi_objective else {}),
        })
    order = "the Pareto front first" if study.multi_objective else "best first"
    _emit(args, records, list(SHOW_COLUMNS), title=f"{study.name} ({_count(len(trials), 'trial')}, {order})")
    if args.json or args.csv:
        return 0
    if study.multi_objective:
        _emit(args, _front_records(study), _front_columns(study), title=_front_title(study))
    acct = study.accounting()
    console.print(
        f"compute: {acct['epochs_run']} epochs, {acct['wall_seconds']:.1f} trial-seconds, "
        f"{acct['gpu_seconds']:.1f} GPU-seconds · pruned {acct['pruned']}, early-stopped "
        f"{acct['early_stopped']}: {acct['epochs_saved']} epochs saved "
        f"({acct['saved_fraction']:.0%} of running every trial to the full budget)", highlight=False, width=_width(),
    )
    return 0


def _curve(study: Any, trial: Any, rows: list[dict[str, Any]], metric: str) -> list[float | None]:
    """A trial's objective metric per epoch, the one the study ranks on: its intermediate values (Optuna keeps a
    NaN as NaN) for one objective, else the metric as reported; None where an epoch did not report it."""
    if study.multi_objective:
        return [r.get(metric) for r in rows]
    return [trial.intermediate_values.get(r["epoch"]) for r in rows]


# The columns of `tuner show`; on a narrow terminal the optional ones go first, in this order.
SHOW_COLUMNS = ("#", "state", "value", "best ep", "gap", "curve", "diagnosis", "epochs", "seconds",
                "device", "params", "stopped because")
OPTIONAL_COLUMNS = ("curve", "device", "seconds", "epochs", "best ep", "gap", "diagnosis")
WRAPPED_COLUMNS = ("params", "stopped because", "study")
# A wrapped column of prose ("stopped because") is at least this wide, or its longest word if shorter.
PROSE_WIDTH = 24


def _width() -> int:
    """The columns a table may take: the terminal's (or COLUMNS), else PIPED_WIDTH."""
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console.width
    return PIPED_WIDTH


def _emit(args: argparse.Namespace, records: list[dict[str, Any]], columns: list[str], title: str) -> int:
    """Records as JSON (--json), a CSV file (--csv FILE), or a table that fits the terminal.

    Nothing is cut short: optional columns go first on a narrow terminal, a mapping cell (a trial's
    params) wraps only between its ``name=value`` pairs, and the params move to a block under the
    table when keeping them in it would cost a column.
    """
    if args.json:
        console.out(_json(records), highlight=False)
        return 0
    if args.csv:
        _write_csv(args.csv, records, columns)
        err.print(f"wrote {len(records)} rows to {args.csv}")
        return 0
    width = _width()
    cells = [{c: _params(r[c]) if isinstance(r[c], dict) else fmt(r[c]) for c in columns} for r in records]
    pairs = {c for c in columns if any(isinstance(r[c], dict) for r in records)}  # wrap between pairs only
    wrapped = pairs | {c for c in columns if c in WRAPPED_COLUMNS}
    widths = {c: max([len(c), *(len(row[c]) for row in cells)]) for c in columns}
    for c in wrapped:  # the narrowest a wrapped column may be: its longest word (prose: up to PROSE_WIDTH)
        longest = max(len(w) for text in [c, *(row[c] for row in cells)] for w in text.split() or [""])
        widths[c] = longest if c in pairs else min(longest, PROSE_WIDTH)
    inline = {c: widths[c] for c in columns}
    if "params" in pairs:  # in the table, params should take a few lines a trial, not one a pair
        longest = max(len(row["params"]) for row in cells)
        inline["params"] = max(widths["params"], min(longest, 60))

    def dropped(shown: list[str], need: dict[str, int]) -> int | None:
        """How many optional columns must go for ``shown`` to fit; None when it cannot."""
        shown = list(shown)
        for n, optional in enumerate([None, *OPTIONAL_COLUMNS]):
            if optional in shown:
                shown.remove(optional)
            if sum(need[c] for c in shown) + 3 * len(shown) + 1 <= width:
                return n
        return None

    block = "params" in pairs and "params" in columns
    if block:
        with_params, without = dropped(columns, inline), dropped([c for c in columns if c != "params"], widths)
        block = with_params is None or (without is not None and without < with_params)
    shown = [c for c in columns if not (block and c == "params")]
    for optional in OPTIONAL_COLUMNS[:dropped(shown, inline if not block else widths) or 0]:
        if optional in shown:
            shown.remove(optional)
    if not block and dropped(shown, inline) is None and "params" in pairs:  # too narrow even for the block
        block, shown = True, [c for c in shown if c != "params"]
    given = _wrapped_widths(shown, wrapped, widths, cells, width)
    table = Table(*[
        Column(c, overflow="fold", width=given[c]) if c in wrapped
        else Column(c, no_wrap=True, min_width=widths[c]) for c in shown
    ], title=title)
    for row in cells:
        table.add_row(*[row[c] for c in shown])
    console.print(table, width=width)
    if block:
        _print_params_block(records, columns[0], width)
    return 0


def _json(value: Any) -> str:
    """Strict JSON: a value that is not a finite number (a diverged loss) is null, never NaN or Infinity,
    which JSON has no words for and strict parsers (jq, JavaScript's JSON.parse) refuse."""
    return json.dumps(_finite(value), indent=2, default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _wrapped_widths(shown: list[str], wrapped: set[str], widths: dict[str, int], cells: list[dict[str, str]],
                    width: int) -> dict[str, int]:
    """The width of each wrapped column: its narrowest, then the room left shared a character at a time
    among those that would wrap (rich, left to it, may keep a header whole and overflow the terminal)."""
    given = {c: widths[c] for c in shown if c in wrapped}
    whole = {c: max([len(c), *(len(row[c]) for row in cells)]) for c in given}
    room = width - sum(widths[c] for c in shown) - 3 * len(shown) - 1
    while room > 0 and any(given[c] < whole[c] for c in given):
        for c in given:
            if room > 0 and given[c] < whole[c]:
                given[c], room = given[c] + 1, room - 1
    return given


def _print_params_block(records: list[dict[str, Any]], key: str, width: int) -> None:
    """Each row's params under the table, in its order: the key, then the pairs, wrapped between pairs."""
    console.print(f"params ({key}: name=value pairs)", highlight=False, width=width)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True, justify="right")
    grid.add_column(overflow="fold")
    room = width - max([0, *(len(fmt(r[key])) for r in records)]) - 2
    for r in records:
        grid.add_row(fmt(r[key]), _pairs_wrapped(r["params"], room))
    console.print(grid, width=width, highlight=False)


def _write_csv(path: str, records: list[dict[str, Any]], columns: list[str]) -> None:
    from tuner.errors import TunerError

    try:
        with open(path, "w", newline="") as fh:
            _write_rows(fh, columns, ({c: json.dumps(r[c]) if isinstance(r[c], dict) else r[c] for c in columns}
                                      for r in records))
    except OSError as exc:
        raise TunerError(f"--csv: cannot write {path!r}: {exc.strerror}. Fix: choose a writable path.") from None


def _write_rows(fh: Any, columns: list[str], rows: Any) -> None:
    """CSV rows under a header, each text cell and header made safe to open in a spreadsheet."""
    writer = csv.writer(fh)
    writer.writerow([_csv_safe(c) for c in columns])
    writer.writerows([_csv_safe(row.get(c)) for c in columns] for row in rows)


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...), +cmd|...).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_safe(value: Any) -> Any:
    """``value`` for a CSV cell: text a spreadsheet would run as a formula gets a leading ' (OWASP's
    neutralization), so that it shows as the text it is; numbers, and text that reads as one (-inf), stay."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_STARTS):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def cmd_best(args: argparse.Namespace) -> int:
    import tuner

    study = tuner.load(args.study, args.storage)
    if study.multi_objective:
        return _best_front(study, args)
    try:
        best = study.best_trial
    except ValueError:
        from tuner.errors import TunerError

        raise TunerError(f"study {args.study!r} has no completed trial yet.") from None
    record = {"study": study.name, "trial": best.number, "value": best.value, "params": best.params,
              **{k: v for k, v in best.user_attrs.items() if k in ("best_epoch", "final_gap", "epochs")}}
    if args.json:
        print(_json(record))
    else:
        console.print(f"best trial {best.number}: {study.spec.get('objective', {}).get('metric', 'value')} = {fmt(best.value)}")
        for key, value in best.params.items():
            console.print(f"  {key}: {value}")
    return 0


def cmd_epochs(args: argparse.Namespace) -> int:
    import tuner

    study = tuner.load(args.study, args.storage)
    if args.parquet:
        from tuner.frames import epochs_dataframe, to_parquet

        err.print(f"wrote {to_parquet(epochs_dataframe(study, args.trial), args.parquet)} epoch rows to {args.parquet}")
        return 0
    if args.trial is not None and args.trial not in {t.number for t in study.trials}:
        return _show_epochs(study, args.trial)  # says which trials there are
    rows = study.epochs(args.trial)
    if args.json:
        console.out(_json(rows), highlight=False)
        return 0
    columns = _columns(rows)
    if args.csv:
        try:
            with open(args.csv, "w", newline="") as fh:
                _write_rows(fh, _csv_columns(rows), rows)
        except OSError as exc:
            from tuner.errors import TunerError

            raise TunerError(f"--csv: cannot write {args.csv!r}: {exc.strerror}. Fix: choose a writable path.") from None
        err.print(f"wrote {len(rows)} epoch rows to {args.csv}")
        return 0
    table = Table(*columns, title=f"{study.name}: {len(rows)} epochs")
    for row in rows:
        table.add_row(*[fmt(row.get(c)) for c in columns])
    console.print(table)
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    import tuner

    study = tuner.load(args.study, args.storage)
    path = study.best_checkpoint(args.output) if args.trial is None else study.checkpoint(args.trial, args.output)
    print(path)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from tuner.recovery import refuse_if_run_elsewhere
    from tuner.store import Store
    from tuner.store.lock import study_lock

    store = Store(args.storage, create=False)
    again = f"delete it (`tuner delete {_quoted(args.study)}`)"
    with study_lock(store.url, args.study, again):  # refused before asking: its runner holds it
        pass
    if not args.force:
        refuse_if_run_elsewhere(store, args.study, again, force=f"`tuner delete {_quoted(args.study)} --force`")
    if not args.yes and not _confirmed_delete(store, args.study):
        err.print(f"not confirmed: study {args.study} is kept.", highlight=False)
        return 1
    with study_lock(store.url, args.study, again):  # no runner starts on it while it goes
        trials, rows = store.delete_study(args.study)
    console.print(f"deleted study {args.study} from {store.safe_url}: {trials} trials, {rows} epoch rows",
                  highlight=False)
    return 0


def _confirmed_delete(store: Any, name: str) -> bool:
    """Ask on a terminal before a study is deleted; with no one to ask (a script, a pipe), refuse with the fix."""
    from optuna.trial import TrialState

    from tuner.errors import TunerError

    study = store.load_study(name)
    what = (f"study {name} from {store.safe_url}: {_count(store.count_trials(study, list(TrialState)), 'trial')}, "
            f"{_count(store.count_epochs(study), 'epoch row')}")
    if not sys.stdin.isatty():
        raise TunerError(f"delete: would delete {what}, and there is no terminal to confirm it on. Fix: add --yes "
                         f"to delete without asking (`tuner delete {_quoted(name)} --yes`).")
    err.print(f"delete {what}? This cannot be undone. [y/N] ", end="", highlight=False, markup=False)
    try:
        answer = input()
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def cmd_copy(args: argparse.Namespace) -> int:
    from tuner.store import Store

    from tuner.spec import check_study_name

    name = args.name or args.study
    check_study_name(name, "--name" if args.name else "study")  # before either store is opened
    source, target = Store(args.storage, create=False), Store(args.to)
    trials, rows = source.copy_study(args.study, target, name)
    console.print(f"copied study {args.study} to {name} in {target.safe_url}: {trials} trials, {rows} epoch rows",
                  highlight=False)
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    """Queue configurations from a JSON file (an object of param values, or a list of them) to run first."""
    from tuner.api import enqueue
    from tuner.trial.record import counts_toward_budget

    from optuna.trial import TrialState

    from tuner.store import internals

    points = _read_points(args.params)
    study = enqueue(args.study, points, args.storage, source=args.params)
    # The queued trials are counted, not read: a list of 200,000 points would take minutes to load.
    others = [s for s in TrialState if s != TrialState.WAITING]
    trials = study.store.storage.get_all_trials(internals.study_id(study.optuna), deepcopy=False, states=others)
    done, planned = sum(map(counts_toward_budget, trials)), study.plan.trials
    queued = study.store.count_trials(study.optuna, [TrialState.WAITING])
    when = (f"they run first at `tuner resume {_quoted(study.name)}` (or at the next trial of a run that goes)"
            if planned - done >= queued else
            f"its budget has room for {max(planned - done, 0)} of the {queued} queued: "
            f"`tuner resume {_quoted(study.name)} "
            f"--trials {done + queued}` runs them all")
    console.print(f"queued {_count(len(points), 'configuration')} in study {study.name} ({done}/{planned} "
                  f"trials done); {when}.", highlight=False)
    return 0


def _read_points(path: str) -> list[dict[str, Any]]:
    from tuner.errors import SpecError

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh, object_pairs_hook=_unique_keys, parse_int=_short_int)
    except FileNotFoundError:
        raise SpecError(path, ["no such file. Fix: check the path."]) from None
    except OSError as exc:
        raise SpecError(path, [f"cannot be read: {exc.strerror}. Fix: check the file's permissions."]) from None
    except json.JSONDecodeError as exc:
        raise SpecError(path, [f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}. "
                               "Fix: correct the JSON there."]) from None
    except _BadPoints as exc:
        raise SpecError(path, [str(exc)]) from None
    except RecursionError:
        raise SpecError(path, ["is nested too deeply to be points (a point is one object of param values). "
                               'Fix: e.g. [{"lr": 0.01, "depth": 2}].']) from None
    except UnicodeDecodeError:
        raise SpecError(path, ["must be UTF-8 JSON text, but is not. Fix: name the JSON file of params."]) from None
    points = [data] if isinstance(data, dict) else data
    if not isinstance(points, list) or not points or not all(isinstance(p, dict) for p in points):
        raise SpecError(path, [f"must hold a JSON object of param values, or a non-empty list of them, but got "
                               f"{json.dumps(data)[:80]}. Fix: e.g. {{\"lr\": 0.01, \"depth\": 2}}."])
    return points


class _BadPoints(ValueError):
    """A points file that parses as JSON but cannot be points (said in the message)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused where a key repeats (json keeps the last one silently)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _BadPoints(f"the key {key[:80]!r} appears twice in one object, so which value is meant is unclear. "
                             "Fix: keep one of them.")
        seen[key] = value
    return seen


def _short_int(text: str) -> int:
    """A JSON integer of at most 100 digits: no param takes more, and Python refuses to read 4,300."""
    if len(text.lstrip("-")) > 100:
        raise _BadPoints(f"holds an integer of {len(text.lstrip('-'))} digits ({text[:20]}…), which is no param "
                         "value. Fix: give the value in the param's range.")
    return int(text)


def cmd_report(args: argparse.Namespace) -> int:
    import tuner
    from tuner import report

    study = tuner.load(args.study, args.storage)
    started = time.monotonic()

    def step(what: str) -> None:
        err.print(f"report: {what} ({time.monotonic() - started:.0f} s)", highlight=False)

    plots = report.write(study, args.output, args.png, retrain=not args.no_test, on_step=step)
    where = f" and {len(plots)} PNGs to {args.png}" if args.png else ""
    err.print(f"wrote the report of {study.name} ({len(plots)} plots) to {args.output}{where}", highlight=False)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import tuner
    from tuner import report

    studies = [report.collect(tuner.load(name, args.storage)) for name in args.studies]
    table = Table("", *[f.name for f in studies], title="studies side by side")
    for label, values in report.compare_rows(studies):
        table.add_row(label, *values)
    console.print(table)
    if args.output:
        report.write_compare(studies, args.output)
        err.print(f"wrote the optimization histories to {args.output}", highlight=False)
    else:
        err.print("add -o compare.html (or .png) to plot their optimization histories", highlight=False)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from tuner import dashboard
    from tuner.store import Store

    store = Store(args.storage, create=False)

    def ready(url: str, artifacts: Any) -> None:
        err.print(f"optuna-dashboard on {url} · store {store.safe_url} · learning curves in {artifacts} · "
                  "Ctrl-C stops", highlight=False)

    def warn(message: str) -> None:
        err.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    try:
        dashboard.serve(store, host=args.host, port=args.port, artifacts=args.artifacts, on_ready=ready, warn=warn)
    except KeyboardInterrupt:
        err.print("dashboard stopped.")
    return 0


def cmd_schedule_add(args: argparse.Namespace) -> int:
    from tuner.schedule import Schedules
    from tuner.store import Store

    book = Schedules(Store(args.storage))
    record = book.add(
        args.name, args.spec, args.cron, timezone=args.timezone, warm_start=args.warm_start,
        overlap=args.overlap, catch_up=args.catch_up, on_interrupt=args.on_interrupt,
        storage=args.study_storage, ray_address=args.ray_address, executor=args.executor,
    )
    console.print(f"schedule {record.name}: {record.cron} ({record.timezone}) · next firing "
                  f"{_when(record.next_fire_at)} · store {book.store.safe_url}", highlight=False)
    console.print("`tuner scheduler` fires it; `tuner schedule run-now "
                  f"{record.name}` runs it once now.", highlight=False)
    return 0


def cmd_schedule_list(args: argparse.Namespace) -> int:
    from tuner.schedule import Schedules
    from tuner.store import Store

    book = Schedules(Store(args.storage, create=False))
    last = {}
    for run in reversed(book.runs()):
        last[run.schedule_id] = run
    schedules = book.all()
    last_runs = [f"{last[s.id].status} ({last[s.id].study})" for s in schedules if s.id in last]
    table = Table("schedule", "cron", "timezone", "state", "next firing (UTC)", _whole_words("last run", last_runs),
                  "last best", "spec", title=f"schedules in {book.store.safe_url}")
    for sched in schedules:
        run = last.get(sched.id)
        table.add_row(sched.name, sched.cron, sched.timezone, "enabled" if sched.enabled else "paused",
                      _when(sched.next_fire_at) if sched.enabled else "",
                      f"{run.status} ({run.study})" if run else "", fmt(run.best_value) if run else "",
                      sched.spec_path)
    _print_whole(table)
    return 0


def _print_whole(table: Table) -> None:
    """A table of records (schedules, their runs) printed whole: in a terminal (or at COLUMNS) within its width,
    piped at the table's own width, as a log or a grep wants every column of it."""
    if console.is_terminal or os.environ.get("COLUMNS"):
        console.print(table)
        return
    from rich.measure import Measurement

    roomy = Console(file=console.file, width=1000)
    Console(file=console.file, width=Measurement.get(roomy, roomy.options, table).maximum).print(table)


def _whole_words(header: str, values: list[str]) -> Column:
    """A column at least as wide as its longest word, so that a narrow terminal (or a pipe's 120 columns) never
    cuts a study's name, which is what the user types next; other columns wrap instead."""
    return Column(header, min_width=max((len(word) for value in values for word in value.split()), default=0))


def cmd_schedule_show(args: argparse.Namespace) -> int:
    from tuner.schedule import Schedules
    from tuner.store import Store, safe_url

    book = Schedules(Store(args.storage, create=False))
    sched = book.get(args.name)
    where = safe_url(sched.storage) if sched.storage else book.store.safe_url
    console.print(
        f"schedule {sched.name}: {sched.cron} ({sched.timezone}), {'enabled' if sched.enabled else 'paused'}, "
        f"next firing {_when(sched.next_fire_at)}\n  spec {sched.spec_path} · studies in {where} · "
        f"{sched.executor} executor{' on ' + sched.ray_address if sched.ray_address else ''}\n"
        f"  overlap: {sched.overlap} · catch_up: {sched.catch_up} · on_interrupt: {sched.on_interrupt} · "
        f"warm start: {sched.warm_start}", highlight=False,
    )
    runs = book.runs(args.name, limit=args.last)
    table = Table("run", "firing (UTC)", "trigger", _whole_words("study", [r.study for r in runs]), "status",
                  "started", "ended", "best", "change", "trials", "why", title=f"runs of {sched.name}, newest first")
    for run in runs:
        table.add_row(str(run.id), _when(run.scheduled_for), run.trigger, run.study, run.status,
                      _when(run.started_at), _when(run.ended_at), fmt(run.best_value),
                      "" if run.change is None else f"{run.change:+.4g}", fmt(run.trials), run.reason or "")
    _print_whole(table)
    return 0


def cmd_schedule_pause(args: argparse.Namespace) -> int:
    return _set_enabled(args, False)


def cmd_schedule_resume(args: argparse.Namespace) -> int:
    return _set_enabled(args, True)


def _set_enabled(args: argparse.Namespace, enabled: bool) -> int:
    from tuner.schedule import Schedules
    from tuner.store import Store

    record = Schedules(Store(args.storage, create=False)).set_enabled(args.name, enabled)
    state = f"resumed; next firing {_when(record.next_fire_at)}" if enabled else "paused"
    console.print(f"schedule {record.name} {state}", highlight=False)
    return 0


def cmd_schedule_remove(args: argparse.Namespace) -> int:
    from tuner.schedule import Schedules
    from tuner.store import Store

    Schedules(Store(args.storage, create=False)).remove(args.name)
    console.print(f"schedule {args.name} removed (its studies stay in the store)", highlight=False)
    return 0


def cmd_schedule_run_now(args: argparse.Namespace) -> int:
    from tuner.schedule import Scheduler
    from tuner.store import Store

    scheduler = Scheduler(Store(args.storage, create=False))
    run = scheduler.run_now(args.name)
    console.print(f"run {run.id} of {args.name}: {run.status}, study {run.study}, best {fmt(run.best_value)}"
                  + (f" — {run.reason}" if run.reason else ""), highlight=False)
    return 0 if run.status == "succeeded" else 1


def cmd_scheduler(args: argparse.Namespace) -> int:
    import signal

    from tuner.errors import TunerError
    from tuner.schedule import Scheduler
    from tuner.store import Store

    if not 0 < args.interval <= 60:
        raise TunerError(f"--interval: seconds between passes must be in (0, 60], but got {args.interval:g}. "
                         "Fix: e.g. --interval 30 (a daemon silent for 2 minutes is taken for dead).")
    store = Store(args.storage)

    def terminate(*_: Any) -> None:
        raise KeyboardInterrupt  # `docker stop` and systemd send SIGTERM: stop as for Ctrl-C

    signal.signal(signal.SIGTERM, terminate)
    err.print(f"scheduler on {store.safe_url}{' (once)' if args.once else ''} · every {args.interval:g} s · "
              "Ctrl-C stops (running runs are interrupted, and resumed by the next scheduler)", highlight=False)
    try:
        Scheduler(store, interval=args.interval).serve(once=args.once)
    except KeyboardInterrupt:
        err.print("scheduler stopped.")
        return 130
    return 0


def _when(moment: Any) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def _show_epochs(study: Any, number: int) -> int:
    from tuner.errors import TunerError

    if number not in {t.number for t in study.trials}:
        raise TunerError(f"--trial: study {study.name!r} has no trial {number} (it has 0..{len(study.trials) - 1}).")
    trial = study.trials[number]
    width = _width()
    state = "failed" if trial.state.name == "FAIL" else trial.state.name.lower()
    value = fmt(trial.value) if trial.value is not None else f"none ({state})"
    head = f"trial {number}: {trial.state.name}, value {value}, params"
    console.print(f"{head}{_pairs_wrapped(trial.params, width, len(head))}", width=width, highlight=False)
    for key, value in trial.user_attrs.items():
        console.print(f"  {key}: {_attr_text(value)}", width=width, highlight=False, markup=False)
    rows = study.epochs(number)
    columns = [c for c in _columns(rows) if c not in ("trial", "device")]
    cells = [{c: fmt(row.get(c)) for c in columns} for row in rows]
    widths = {c: max([len(c), *(len(row[c]) for row in cells)]) for c in columns}
    for group in _column_groups(columns, widths, width):
        table = Table(*[Column(c, no_wrap=True, min_width=widths[c]) for c in group])
        for row in cells:
            table.add_row(*[row[c] for c in group])
        console.print(table, width=width)
    return 0


def _attr_text(value: Any) -> str:
    """A trial attribute as text: a checkpoint's record as its epoch and size (and why it is gone), another
    mapping as name=value pairs, a number as a value."""
    from rich.filesize import decimal

    if isinstance(value, dict) and {"epoch", "bytes"} <= value.keys():
        gone = f", removed: {value['removed']}" if value.get("removed") else ""
        return f"epoch {value['epoch']}, {decimal(value['bytes'])}{gone}"
    if isinstance(value, dict):
        return _params(value)
    return fmt(value)


def _column_groups(columns: list[str], widths: dict[str, int], width: int) -> list[list[str]]:
    """Columns in tables of at most ``width`` characters, each led by the first column (as pandas
    wraps a wide frame): every header and value whole, however many metrics a workload reports."""
    key, groups = columns[0], [[columns[0]]]
    for c in columns[1:]:
        if len(groups[-1]) > 1 and sum(widths[g] for g in [*groups[-1], c]) + 3 * (len(groups[-1]) + 1) + 1 > width:
            groups.append([key])
        groups[-1].append(c)
    return groups


# ---------------------------------------------------------------------- display


def _progress_display(quiet: bool) -> Display:
    """The progress of a running study on stderr (see tuner.progress); --quiet: none."""
    return Display(quiet, err)


def _print_result(study: Any, args: argparse.Namespace) -> int:
    """The best trial and what to run next; status 1 when no trial completed (the study has no result)."""
    from tuner.errors import StudyFailedError

    why = study.why_no_result()
    if why is not None:
        failed = [t for t in study.trials if t.state.name == "FAIL" and t.user_attrs.get("fail_traceback")]
        raise StudyFailedError(f"study {study.name}: no trial completed: {why}", study=study.name,
                               workload_traceback=failed[0].user_attrs["fail_traceback"] if failed else None)
    best = study.pareto_front()[0] if study.multi_objective else study.best_trial
    if study.multi_objective:
        return _front_result(study)
    direction = study.optuna.direction.name.lower()
    top = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: _rank(t, direction))[:3]
    ran = _ran(study)
    console.print(f"study {study.name}: {_count(len(ran), 'trial')} in {_duration(ran)}; best "
                  f"{len(top)}:", highlight=False)
    for t in top:
        head = f"  trial {t.number}: value {fmt(t.value)} "
        console.print(head + _pairs_wrapped(t.params, _width(), len(head), indent=4), highlight=False)
    head = f"best trial {best.number}: value {fmt(best.value)} "
    console.print(head + _pairs_wrapped(best.params, _width(), len(head), indent=2), highlight=False)
    reached = study.target_reached
    if reached is not None:
        target = study.spec["objective"]["target"]
        console.print(f"target reached: trial {reached.number} has value {fmt(reached.value)} "
                      f"{'<=' if direction == 'minimize' else '>='} {fmt(target)} (objective.target), so no new "
                      f"trial started after it", highlight=False)
    _print_next(study)
    return 0


def _print_next(study: Any) -> None:
    console.print(
        f"next: tuner show {_quoted(study.name)} · tuner report {_quoted(study.name)} -o report.html · "
        f"tuner dashboard --storage {_storage_hint(study.store)}", highlight=False,
    )


# ---------------------------------------------------------------------- several objectives: the Pareto front


def _front_size(store: Any, name: str) -> str:
    return f"Pareto front of {_count(len(store.load_study(name).best_trials), 'trial')}"


def _value_cell(study: Any, trial: Any) -> Any:
    """A trial's value; with several objectives, each by its metric (a mapping shows as metric=value)."""
    if not study.multi_objective:
        return trial.value
    return dict(zip(study.metric_names, trial.values)) if trial.values else None


def _show_order(study: Any) -> tuple[list[Any], set[int]]:
    """`tuner show`'s trials, best first; with several objectives the Pareto front first, then by the first."""
    if not study.multi_objective:
        direction = study.optuna.direction.name.lower()
        return sorted(study.trials, key=lambda t: _rank(t, direction)), set()
    front = [t.number for t in study.pareto_front()]
    direction = study.optuna.directions[0].name.lower()
    first = {t.number: t.values[0] for t in study.trials if t.values}
    def key(t: Any) -> tuple[int, int, float, int]:
        on_front = front.index(t.number) if t.number in front else len(front)
        value = first.get(t.number)
        done = value is not None and math.isfinite(value)
        return (on_front, 0 if done else 1, (value if direction == "minimize" else -value) if done else 0.0, t.number)
    return sorted(study.trials, key=key), set(front)


def _front_records(study: Any) -> list[dict[str, Any]]:
    return [{"trial": t.number, **dict(zip(study.metric_names, t.values)), "params": t.params}
            for t in study.pareto_front()]


def _front_columns(study: Any) -> list[str]:
    return ["trial", *study.metric_names, "params"]


def _front_title(study: Any) -> str:
    complete = sum(t.state.name == "COMPLETE" for t in study.trials)
    objectives = ", ".join(f"{d.name.lower()} {m}" for d, m in zip(study.optuna.directions, study.metric_names))
    return f"{study.name}: Pareto front, {len(study.best_trials)} of {_count(complete, 'completed trial')} ({objectives})"


def _best_front(study: Any, args: argparse.Namespace) -> int:
    """`tuner best` of a study with several objectives: its Pareto front, one row a trial."""
    from tuner.errors import TunerError

    records = _front_records(study)
    if not records:
        raise TunerError(f"study {args.study!r} has no completed trial yet.")
    if args.json:
        objectives = [{"metric": m, "direction": d.name.lower()} for m, d in zip(study.metric_names, study.optuna.directions)]
        print(_json({"study": study.name, "objectives": objectives, "pareto_front": [
            {"trial": r["trial"], "values": {m: r[m] for m in study.metric_names}, "params": r["params"]}
            for r in records]}))
        return 0
    return _emit(argparse.Namespace(json=False, csv=None), records, _front_columns(study), title=_front_title(study))


def _ran(study: Any) -> list[Any]:
    """The study's trials that ran: a queued one still WAITING (past the budget) is no trial of this run."""
    return [t for t in study.trials if t.state.name != "WAITING"]


def _front_result(study: Any) -> int:
    """What a finished launch with several objectives prints: its Pareto front."""
    front = study.pareto_front()
    ran = _ran(study)
    console.print(f"study {study.name}: {_count(len(ran), 'trial')} in {_duration(ran)}; "
                  f"{_front_title(study).split(': ', 1)[1]}:", highlight=False)
    for t in front:
        values = "  ".join(f"{m} {fmt(v)}" for m, v in zip(study.metric_names, t.values))
        console.print(f"  trial {t.number}: {values}  {_params(t.params)}", highlight=False)
    _print_next(study)
    return 0


def _duration(trials: Any) -> str:
    """Wall-clock time from the first trial's start to the last one's end."""
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    seconds = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _storage_hint(store: Any) -> str:
    """The URL to type again; one with a password is shown masked, which cannot be typed."""
    return _quoted(store.url) if store.url == store.safe_url else f"{_quoted(store.safe_url)} (with your password)"


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


def _pairs_wrapped(params: dict[str, Any], width: int, first: int = 0, indent: int = 0) -> str:
    """``name=value`` pairs in lines of at most ``width``, the first line after ``first`` characters
    already printed (it starts with a space then; a newline when not even one pair fits there), the
    lines after it indented by ``indent``.

    A pair that does not fit what is left of a line starts the next; one wider than a whole line breaks
    only after its ``=``, its value alone on the next line, indented: never inside a name or a number."""
    lines: list[str] = []
    line, room = "", width - first  # the line being filled, and what is left of it
    for name, value in params.items():
        pair = f"{name}={fmt(value)}"
        gap = 1 if line or first else 0
        if room >= gap + len(pair):
            line, room = line + " " * gap + pair, room - gap - len(pair)
            continue
        if line or first:
            lines.append(line)
        whole = width - indent  # a line after the first
        if len(pair) <= whole:
            line, room = " " * indent + pair, whole - len(pair)
        else:  # the name on a line, the value alone under it
            lines.append(" " * indent + f"{name}=")
            line, room = " " * (indent + 2) + fmt(value), 0
    lines.append(line)
    return "\n".join(lines)


def _rank(trial: Any, direction: str) -> tuple[int, float, int]:
    if trial.value is None or not math.isfinite(trial.value):
        return (1, 0.0, trial.number)
    return (0, trial.value if direction == "minimize" else -trial.value, trial.number)


def _best_value(trials: Any, direction: str) -> float | None:
    """The best value of the COMPLETE trials (a pruned trial's last value is no result); None if none."""
    values = [t.value for t in trials if t.state.name == "COMPLETE" and t.value is not None and math.isfinite(t.value)]
    if not values:
        return None
    return min(values) if direction == "minimize" else max(values)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns and row[k] is not None]
    return columns or ["trial", "epoch"]


def _csv_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of every row, each once: the store's columns first (every row has them, in its order),
    then each workload metric where it first appears. A column empty in every row stays, so files of
    different studies have the same built-in columns."""
    return list(dict.fromkeys(key for row in rows for key in row)) or ["trial", "epoch"]


def _quiet_libraries() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # tuner's own warnings (a database outage being waited out, say) reach the user.
    from rich.logging import RichHandler

    tuner_log = logging.getLogger("tuner")
    if not tuner_log.handlers:
        tuner_log.addHandler(RichHandler(console=err, show_path=False, show_time=False))
        tuner_log.setLevel(logging.INFO)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("ray").setLevel(logging.ERROR)


# ---------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, with the closest option named for a mistyped one (--trails: did you mean --trials?)."""

    def error(self, message: str) -> NoReturn:
        unknown = re.search(r"unrecognized arguments: (.*)", message)
        if unknown:
            hints = []
            for arg in unknown.group(1).split():
                close = difflib.get_close_matches(arg.split("=")[0], _option_strings(self), n=1, cutoff=0.7)
                if arg.startswith("-") and close and close[0] != arg.split("=")[0]:
                    hints.append(f"{arg}: did you mean {close[0]}?")
                elif arg.startswith("-") and close:  # an option of another command
                    hints.append(f"{arg}: that command has no such option (-h lists its options)")
            message = "; ".join([message, *hints])
        super().error(message)


def _trial_number(text: str) -> int:
    """A trial number as a flag's value: a whole number from 0 (a store keeps it in 64 bits)."""
    try:
        number = int(text)
    except ValueError:
        number = -1
    if not 0 <= number < 2**63:
        raise argparse.ArgumentTypeError(f"must be a trial number (0, 1, 2, ...: `tuner show STUDY` lists them), "
                                         f"but got {text[:40]!r}")
    return number


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every option of ``parser`` and of its subcommands, at any depth."""
    found: list[str] = []
    for action in parser._actions:  # argparse has no public walk of its tree
        found += [o for o in action.option_strings if o.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _option_strings(sub)
    return sorted(set(found))


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tuner", description="Hyperparameter tuning for deep-learning training.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def add(name: str, func: Callable[..., int], help: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, description=help)
        cmd.set_defaults(func=func)
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        return cmd

    launch = add("launch", cmd_launch, "launch a study from a search-space YAML file")
    launch.add_argument("spec", help="search-space file, e.g. search_spaces/mnist1d_mlp.yaml")
    launch.add_argument("--study", help="study name (default: the spec's name)")
    _exists_options(launch)
    launch.add_argument("--strategy", help="auto (default; picks grid, gp or tpe), grid, random, tpe, gp, cmaes or qmc")
    launch.add_argument("--pruner", metavar="NAME",
                        help="the spec's pruner type instead of its pruner: section: none, median, percentile, "
                             "successive_halving, hyperband, threshold or extrapolating (with its default options)")
    launch.add_argument("--trials", type=int, help="number of trials")
    launch.add_argument("--parallel", type=int, help="trials running at once")
    launch.add_argument("--epochs", type=int, help="epochs per trial")
    launch.add_argument("--seed", type=int, help="seed of the strategy and the workloads")
    launch.add_argument("--warm-start-from", metavar="STUDY",
                        help="run the best configurations of STUDY (same store) first; those outside this space are left out")
    launch.add_argument("--warm-start", type=int, metavar="K", help="with --warm-start-from: how many (default: 5)")
    _run_options(launch)

    resume = add("resume", cmd_resume, "continue a study to its budget (stale RUNNING trials are marked FAIL)")
    resume.add_argument("study")
    resume.add_argument("--trials", type=int, help="raise the study's budget to this many trials")
    _run_options(resume)

    probe = add("probe", cmd_probe, "a learning-rate range test: where the loss starts to fall and where it "
                "blows up, with a plot; --narrow then runs the study on that lr range")
    probe.add_argument("spec", help="search-space file with a float param lr")
    probe.add_argument("--narrow", action="store_true",
                       help="then launch the study with params.lr cut to the range found (as probe: {narrow: true})")
    probe.add_argument("-o", "--output", metavar="FILE", help="the plot, a PNG (default: NAME-probe.png)")
    probe.add_argument("--study", help="with --narrow: study name (default: the spec's name)")
    _exists_options(probe)
    probe.add_argument("--trials", type=int, help="with --narrow: number of trials")
    _run_options(probe)

    studies = add("studies", cmd_studies, "list the studies in the store")
    _output_options(studies)
    _storage_option(studies)

    show = add("show", cmd_show, "a table of a study's trials, best first")
    show.add_argument("study")
    show.add_argument("--trial", type=_trial_number, help="show this trial's per-epoch records instead")
    _output_options(show)
    _storage_option(show)

    best = add("best", cmd_best, "the best trial's value and params (several objectives: the Pareto front)")
    best.add_argument("study")
    best.add_argument("--json", action="store_true", help="print JSON")
    _storage_option(best)

    epochs = add("epochs", cmd_epochs, "every recorded epoch of a study")
    epochs.add_argument("study")
    epochs.add_argument("--trial", type=_trial_number, help="only this trial")
    out = epochs.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    out.add_argument("--csv", metavar="FILE", help="write CSV to FILE instead of printing")
    out.add_argument("--parquet", metavar="FILE", help="write Parquet to FILE instead of printing (pandas, pyarrow)")
    _storage_option(epochs)

    ckpt = add("checkpoint", cmd_checkpoint,
               "write a trial's model (its best epoch's checkpoint) to a file (default: the best trial's)")
    ckpt.add_argument("study")
    ckpt.add_argument("--trial", type=_trial_number, help="this trial's instead of the best one's")
    ckpt.add_argument("-o", "--output", metavar="FILE", help="where to write it (default: ./STUDY-trialN-FILENAME)")
    _storage_option(ckpt)

    delete = add("delete", cmd_delete, "delete a study: its trials and their epoch records")
    delete.add_argument("study")
    delete.add_argument("-y", "--yes", action="store_true",
                        help="delete without asking (needed where stdin is not a terminal: scripts, pipes)")
    delete.add_argument("--force", action="store_true",
                        help="PostgreSQL: delete even though trials have a fresh heartbeat (their runner is gone)")
    _storage_option(delete)

    copy = add("copy", cmd_copy, "copy a study, its trials and their epoch records to a store")
    copy.add_argument("study")
    copy.add_argument("--to", required=True, metavar="URL", help="the store to copy to (it may be the same one)")
    copy.add_argument("--name", help="the copy's name (default: the study's; needed to copy within one store)")
    _storage_option(copy)

    enq = add("enqueue", cmd_enqueue, "queue configurations to run first in a study (checked against its space)")
    enq.add_argument("study")
    enq.add_argument("params", metavar="PARAMS.json", help='a JSON object of param values, or a list of them: {"lr": 0.01}')
    _storage_option(enq)

    rep = add("report", cmd_report, "write a self-contained HTML report of a study (opens offline)")
    rep.add_argument("study")
    rep.add_argument("-o", "--output", default="report.html", metavar="FILE", help="HTML file (default: report.html)")
    rep.add_argument("--png", metavar="DIR", help="also write every plot as a PNG file in DIR")
    rep.add_argument("--no-test", action="store_true",
                     help="no test score (of the best trial's saved model, or its configuration retrained on "
                          "train+validation when it has no checkpoint)")
    _storage_option(rep)

    compare = add("compare", cmd_compare,
                  "compare studies side by side: best value and params, trials, compute, time to best")
    compare.add_argument("studies", nargs="+", metavar="STUDY")
    compare.add_argument("-o", "--output", metavar="FILE",
                         help="plot their optimization histories to FILE (.png, or .html with the table)")
    _storage_option(compare)

    dash = add("dashboard", cmd_dashboard, "serve optuna-dashboard on the store, with each trial's learning curves")
    _storage_option(dash)
    dash.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default: 127.0.0.1; the dashboard has no authentication)")
    dash.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    dash.add_argument("--artifacts", metavar="DIR",
                      help="where learning-curve images go (default: DB-artifacts/ next to a SQLite file)")

    _schedule_parser(add)
    sched = add("scheduler", cmd_scheduler, "the daemon that fires due schedules (each run a study)")
    sched.add_argument("--once", action="store_true", help="fire what is due now, wait for those runs, exit")
    sched.add_argument("--interval", type=float, default=30.0, help="seconds between passes (default: 30)")
    _storage_option(sched)
    return p


def _schedule_parser(add: Callable[..., argparse.ArgumentParser]) -> None:
    schedule = add("schedule", lambda a: a.schedule_parser.print_help() or 2, "recurring sweeps: add, list, "
                   "show, pause, resume, remove, run-now")
    schedule.set_defaults(schedule_parser=schedule)
    sub = schedule.add_subparsers(dest="action", metavar="ACTION")

    def action(name: str, func: Callable[..., int], help: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, description=help)
        cmd.set_defaults(func=func)
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        if name != "list":
            cmd.add_argument("name", help="the schedule's name")
        _storage_option(cmd)
        return cmd

    new = action("add", cmd_schedule_add, "add a schedule: launch SPEC at each cron time")
    new.add_argument("spec", help="search-space file (re-read at each firing; a snapshot is kept)")
    new.add_argument("--cron", required=True, help='five-field cron expression, e.g. "0 2 * * *", or @daily')
    new.add_argument("--timezone", default="UTC", help="IANA timezone the cron is read in (default: UTC)")
    new.add_argument("--warm-start", type=int, default=0, metavar="K",
                     help="seed each study with the K best configurations of the previous run (default: 0)")
    new.add_argument("--overlap", default="skip", help="skip (default) or queue a firing while the last run goes")
    new.add_argument("--catch-up", default="once",
                     help="after downtime: once (default: run the missed firings once) or skip")
    new.add_argument("--on-interrupt", default="resume",
                     help="a run whose scheduler died: resume (default) or report it")
    new.add_argument("--study-storage", metavar="URL", help="where the studies go (default: the same store)")
    new.add_argument("--ray-address", help="the Ray cluster runs go to (default: a local Ray per run)")
    new.add_argument("--executor", default="ray", help="ray (default) or inline")
    action("list", cmd_schedule_list, "every schedule, its next firing and its last run")
    show = action("show", cmd_schedule_show, "a schedule and its runs, newest first")
    show.add_argument("--last", type=int, default=20, help="how many runs (default: 20)")
    action("pause", cmd_schedule_pause, "stop firing a schedule")
    action("resume", cmd_schedule_resume, "fire a paused schedule again (from its next time on)")
    action("remove", cmd_schedule_remove, "remove a schedule and its run records (not its studies)")
    action("run-now", cmd_schedule_run_now, "run a schedule once now, and wait for it")


def _exists_options(cmd: argparse.ArgumentParser) -> None:
    taken = cmd.add_mutually_exclusive_group()
    taken.add_argument("--replace", action="store_true",
                       help="if the study exists: delete it (its trials and epochs) and launch anew")
    taken.add_argument("--new-name", action="store_true",
                       help="if the study exists: launch under the first free name NAME-2, NAME-3, ...")


def _output_options(cmd: argparse.ArgumentParser) -> None:
    out = cmd.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    out.add_argument("--csv", metavar="FILE", help="write the rows to a CSV file instead")


def _storage_option(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--storage", help="database URL (default: $TUNER_STORAGE, else sqlite:///tuner.db)")


def _run_options(cmd: argparse.ArgumentParser) -> None:
    _storage_option(cmd)
    cmd.add_argument("--executor", choices=("ray", "inline"), default="ray",
                     help="ray (default; local Ray unless --ray-address) or inline (this process, for debugging)")
    cmd.add_argument("--ray-address", help="join this Ray cluster (default: $RAY_ADDRESS, else a local one)")
    cmd.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    cmd.add_argument("--quiet", action="store_true", help="no progress bar")


if __name__ == "__main__":
    sys.exit(main())
