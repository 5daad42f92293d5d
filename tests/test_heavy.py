"""The largest architectures' tests take turns across pytest-xdist's workers (tests/support/heavy.py)."""

from __future__ import annotations

import fcntl
import tempfile
from pathlib import Path

import pytest

from graphgen import registry
from tests.support.heavy import is_heavy, taking_turns


def test_the_largest_architectures_are_heavy_and_the_usual_ones_not():
    assert is_heavy(["vgg19", 3]) and is_heavy([registry.get("efficientnet_v2_l")])
    assert not is_heavy(["resnet50", "mobilenet_v2", None])


def test_a_heavy_test_holds_the_runs_lock_while_it_runs(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "test-heavy-lock")
    path = Path(tempfile.gettempdir()) / "graphgen-tests-heavy-test-heavy-lock.lock"
    # (another open file of the lock: as another worker would take it)
    with taking_turns(), path.open("a") as other_worker, pytest.raises(BlockingIOError):
        fcntl.flock(other_worker, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with path.open("a") as other_worker:
        fcntl.flock(other_worker, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released after the test
