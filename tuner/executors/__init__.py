"""Where trials run: ``ray`` (default: local Ray or a cluster) or ``inline`` (this process)."""

from __future__ import annotations

from tuner.errors import TunerError
from tuner.executors.base import Executor

EXECUTORS = ("ray", "inline")


def make_executor(name: str = "ray", ray_address: str | None = None) -> Executor:
    if name == "inline":
        from tuner.executors.inline import InlineExecutor

        return InlineExecutor()
    if name == "ray":
        from tuner.executors.ray import RayExecutor  # ray loads only when asked for

        return RayExecutor(ray_address)
    raise TunerError(f"--executor must be one of {', '.join(EXECUTORS)}, but got {name!r}.")


__all__ = ["EXECUTORS", "Executor", "make_executor"]
