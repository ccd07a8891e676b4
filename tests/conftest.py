"""Shared fixtures: a real local Ray instance and real SQLite files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray instance for the whole session (tuner reuses a running one)."""
    import ray

    # Workers import test workloads as `tests.workloads`, from the repo root.
    os.chdir(REPO)
    ray.init(
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    yield ray
    ray.shutdown()


@pytest.fixture
def storage(tmp_path: Path) -> str:
    """A fresh SQLite study store."""
    return f"sqlite:///{tmp_path / 'study.db'}"
