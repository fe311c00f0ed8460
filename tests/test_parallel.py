"""The one process-pool helper: results in order, and a dead worker is an error, never a hang."""

import os
import signal

import pytest

from virnucpro.errors import UserError
from virnucpro.parallel import ordered_map


def square_or_die(number):
    """Top-level (spawned workers import it): task 5 kills its own worker, as the OOM killer would."""
    if number == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return number * number


def square(number):
    return number * number


def test_results_come_in_task_order_whatever_the_worker_count():
    tasks = range(40)
    assert list(ordered_map(square, iter(tasks), workers=2, chunksize=3)) == [n * n for n in tasks]
    assert list(ordered_map(square, iter(tasks), workers=1)) == [n * n for n in tasks]


def test_a_worker_killed_mid_run_is_a_one_line_error_not_a_hang():
    """multiprocessing.Pool replaces a killed worker but never redoes its task: imap alone would
    wait forever (a predict run would stall on every later shard)."""
    with pytest.raises(UserError, match="worker process died"):
        list(ordered_map(square_or_die, iter(range(20)), workers=2))
