"""Helpers shared by the benchmark scripts: timing, peak memory, results on disk and on screen.

Every side of a benchmark returns a plain dict of measurements; these helpers
time it, watch its memory, write the dicts as JSON and print them side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

try:  # psutil is optional: /proc gives the same numbers on Linux.
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

_MIB = 1024 * 1024


@contextlib.contextmanager
def timed() -> Iterator[dict[str, float]]:
    """Measure the wall seconds of a block into ``box["s"]``."""
    box: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - start


@contextlib.contextmanager
def temp_workdir(prefix: str) -> Iterator[Path]:
    """A fresh directory for one side's database and logs, removed afterwards.

    Errors on removal are ignored: Ray's processes can still hold a log file
    for a moment after ``ray.shutdown()``.
    """
    with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as path:
        yield Path(path)


def keep_ray_on_loopback() -> None:
    """Make a local Ray listen on 127.0.0.1 only; call before anything imports ray.

    ``ray.init(_node_ip_address="127.0.0.1")`` is not enough: Ray rewrites a
    loopback address to the host's routable one (``services.resolve_ip_for_localhost``),
    and its servers then listen on every interface. With this variable off, Ray
    runs in the single-node mode it uses on macOS and Windows and binds loopback.
    Ray reads it once, at import.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


# --- memory -------------------------------------------------------------------


def _tree_rss_psutil() -> int:
    me = psutil.Process()
    total = 0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def _tree_rss_proc() -> int:
    """Sum of resident memory of this process and its descendants, read from /proc."""
    parent_of: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(entry.path, "stat").read_text()
                # The command name may hold spaces; fields after its ')' are fixed.
                parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parent_of.items() if parent == pid]
        tree.update(children)
        frontier.extend(children)
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in tree:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
    return total


def tree_rss_bytes() -> int:
    """Resident memory of this process plus every process it started (Ray's too)."""
    if psutil is not None:
        return _tree_rss_psutil()
    if Path("/proc/self/statm").exists():
        return _tree_rss_proc()
    # No process tree to read: this process's own high-water mark (KiB on Linux, bytes on macOS).
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


class PeakRss:
    """Sample the process tree's resident memory in the background and keep the peak.

    ``ru_maxrss`` alone cannot serve: it never goes down, so in one process the
    second side would inherit the first side's peak, and it misses Ray's worker
    processes. Shared pages (Ray's object store) count once per process that
    maps them, so for Ray the figure is an upper bound.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, tree_rss_bytes())

    @property
    def peak_mib(self) -> float:
        return round(self.peak_bytes / _MIB, 1)


# --- results ------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """What the numbers were measured on, written next to them."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "psutil": psutil is not None,
        "packages": {
            name: _version(name) for name in ("optuna", "ray", "sqlalchemy", "tuner")
        },
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(out_dir: Path, name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with the environment to ``out_dir/name.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    body = {"benchmark": name, "environment": environment(), **payload}
    path.write_text(json.dumps(body, indent=2, sort_keys=False) + "\n")
    return path


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(
    title: str,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    ratio_of: str,
    baseline: str,
) -> None:
    """Print one row per side, plus each side's ``ratio_of`` divided by the baseline side's.

    Rows are the sides' result dicts; ``rows[i]["side"]`` names the side.
    Uses rich when it is installed, plain aligned text otherwise.
    """
    base = next((r.get(ratio_of) for r in rows if r.get("side") == baseline), None)
    header = ["side", *columns, f"{ratio_of} / {baseline}"]
    body = []
    for row in rows:
        value = row.get(ratio_of)
        ratio = f"{value / base:.3g}x" if value and base else "-"
        body.append([row.get("side", "?"), *(_cell(row.get(c)) for c in columns), ratio])
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        _print_plain(title, header, body)
        return
    console = Console()
    if not console.is_terminal:  # a log file: let the table be as wide as it needs
        console = Console(width=200)
    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for cells in body:
        table.add_row(*cells)
    console.print(table)


def _print_plain(title: str, header: list[str], body: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    print(title)
    for cells in [header, *body]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))


# --- command line -------------------------------------------------------------


def add_size_args(parser: argparse.ArgumentParser, full: dict[str, Any]) -> None:
    """--seeds, --trials, --epochs (defaults: the full run's) and --target, as the diagnostics and probe runs take."""
    parser.add_argument("--seeds", type=int, help=f"sampler seeds per side (default {full['seeds']})")
    parser.add_argument("--trials", type=int, help=f"trials per study (default {full['trials']})")
    parser.add_argument("--epochs", type=int, help=f"epochs per trial (default {full['epochs']})")
    parser.add_argument("--target", type=float, help="target val_acc (default: the pooled 25th percentile)")


def add_common_args(parser: argparse.ArgumentParser, sides: Sequence[str]) -> None:
    """Flags every benchmark script takes: ``--quick``, ``--out`` and ``--sides``."""
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--out", type=Path, default=None, help="directory for the JSON result")
    parser.add_argument(
        "--sides",
        default=",".join(sides),
        help=f"comma-separated subset of: {', '.join(sides)} (default: all)",
    )


def chosen_sides(args: argparse.Namespace, sides: Sequence[str]) -> list[str]:
    """The sides named by ``--sides``, in the order given; unknown names are a usage error."""
    chosen = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in sides]
    if unknown:
        raise SystemExit(f"--sides takes names from {list(sides)}, but got {unknown}.")
    return chosen


def run_side(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """Run one side; a side that does not exist yet is reported and skipped, not fatal."""
    print(f"running {name} ...", file=sys.stderr, flush=True)
    # On a shared machine other work skews timings; the load says how much.
    load_before = round(os.getloadavg()[0], 2)
    try:
        result = fn()
    except NotImplementedError as exc:
        print(f"skipped {name}: {exc}", file=sys.stderr)
        return None
    return {"side": name, **result, "load_1m_before": load_before, "load_1m_after": round(os.getloadavg()[0], 2)}
