"""What a study found: facts, figures, and the HTML report and compare page drawn from them.

- :mod:`tuner.report.facts`: a study read once, and what its trials add up to
  (no matplotlib, no HTML; ``tuner compare`` prints these).
- :mod:`tuner.report.figures`: matplotlib figures and PNGs, and terminal sparklines.
- :mod:`tuner.report.html`: the report and the compare page from Jinja2
  templates (``templates/``), autoescaped, one self-contained file each.

The names below are what the CLI, the dashboard and the tests use. They load
on first use, so ``import tuner.report.facts`` (or ``tuner show``'s
sparklines) brings in neither Jinja2 nor matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuner.report.facts import Facts, collect, collect_curves, compare_rows, test_score
    from tuner.report.figures import compare_figure, learning_curve_png, sparkline
    from tuner.report.html import Plot, check_directory, check_writable, write, write_compare
    from tuner.trial.metrics import fmt

_HOMES = {
    "tuner.report.facts": ("Facts", "collect", "collect_curves", "compare_rows", "test_score"),
    "tuner.report.figures": ("compare_figure", "learning_curve_png", "sparkline"),
    "tuner.report.html": ("Plot", "check_directory", "check_writable", "write", "write_compare"),
    "tuner.trial.metrics": ("fmt",),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "Facts", "Plot", "check_directory", "check_writable", "collect", "collect_curves", "compare_figure",
    "compare_rows", "fmt", "learning_curve_png", "sparkline", "test_score", "write", "write_compare",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'tuner.report' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
