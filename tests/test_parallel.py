"""The one process-pool helper: results in order, a bounded read-ahead, and a dead worker or a
SIGTERM is a prompt, clean end, never a hang. Each fault is repeated: one pass proves little."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from virnucpro.errors import UserError
from virnucpro.parallel import ordered_map, start_pool

from helpers import BIN, child_pids, is_alive, outliving, write_random_dna_fasta

REPEATS = range(5)
#: A safety net only: every wait below ends on an event long before.
HANG_GUARD_S = 120


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


class CountedTasks:
    """A generator input that counts how many tasks were taken from it."""

    def __init__(self, count):
        self.count, self.read = count, 0

    def __iter__(self):
        for number in range(self.count):
            self.read += 1
            yield number


@pytest.mark.parametrize("workers, chunksize, window", [(2, 1, 2), (2, 3, 6), (2, 3, 4), (3, 2, 12), (2, 5, 5)])
def test_a_generator_input_is_never_read_more_than_the_window_ahead(workers, chunksize, window):
    tasks = CountedTasks(60)
    taken = 0
    for value in ordered_map(square, tasks, workers, chunksize, max_in_flight=window):
        assert value == taken * taken
        taken += 1
        assert tasks.read - taken <= window, (tasks.read, taken)
    assert taken == tasks.read == 60


def test_tasks_spread_over_several_pools_come_back_in_order():
    """One single-process pool per device (extract): each chunk to the least busy pool, results in order."""
    tasks = CountedTasks(30)
    with start_pool(1) as first, start_pool(1) as second:
        pids = {first.submit(os.getpid).result(), second.submit(os.getpid).result()}
        taken = 0
        for value in ordered_map(square, tasks, 2, max_in_flight=4, pools=[first, second]):
            assert value == taken * taken
            taken += 1
            assert tasks.read - taken <= 4
        assert taken == 30
        assert first.busy == second.busy == 0
        assert {first.submit(os.getpid).result(), second.submit(os.getpid).result()} == pids and len(pids) == 2


def _run_guarded(function):
    """Run `function` in a thread; returns what it raised. Fails (rather than hangs) past HANG_GUARD_S."""
    raised = []

    def run():
        try:
            function()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            raised.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), "hung"
    return raised


@pytest.mark.parametrize("attempt", REPEATS)
def test_a_worker_killed_mid_run_is_a_one_line_error_not_a_hang(attempt):
    """A killed worker never sends its result: a pool that only waited would wait forever (a
    predict run would stall on every later shard)."""
    raised = _run_guarded(lambda: list(ordered_map(square_or_die, iter(range(20)), workers=2)))
    assert len(raised) == 1 and isinstance(raised[0], UserError), raised
    message = str(raised[0])
    assert "\n" not in message and message.startswith("a worker process died") and "rerun to resume" in message


#: A worker that dies while it sends a result: the script the test below runs (a fresh process, as
#: the executor's reader thread it leaves stuck would otherwise hold up this one's exit).
DIES_MID_SEND = '''
import os, signal, sys, threading, time

from virnucpro.cli import _exit
from virnucpro.errors import UserError
from virnucpro.parallel import ordered_map

PAYLOAD = 256 << 20


def writing_to_a_pipe():
    """Whether the main thread waits in a write to a pipe (the result's message, 64 KiB at a time)."""
    with open(f"/proc/self/task/{os.getpid()}/wchan") as handle:
        return "pipe" in handle.read()  # pipe_write, anon_pipe_write, pipe_wait_writable (by kernel)


class DiesWhileSent:
    """Pickled in the worker just before it is sent: a thread then kills the worker as soon as the
    message is on its way (its size is far more than a pipe holds)."""

    def __reduce__(self):
        def die():
            while not writing_to_a_pipe():
                time.sleep(0.0002)
            open(sys.argv[1], "w").close()
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=die, daemon=True).start()
        return (bytes, (b"x" * PAYLOAD,))


def task(number):
    return DiesWhileSent() if number == 1 else number


if __name__ == "__main__":
    try:
        list(ordered_map(task, range(4), workers=2))
    except UserError as err:
        print(err, file=sys.stderr)
        _exit(1)  # the tools' own way out
    _exit(0)
'''


def test_a_worker_killed_while_it_sends_a_result_is_one_line_not_a_hang(tmp_path):
    """The executor's reader thread waits forever for the rest of a message whose sender died: the
    pool notices the dead worker itself, and the tool's exit does not wait for that thread."""
    script, marker = tmp_path / "dies_mid_send.py", tmp_path / "sent_before_death"
    script.write_text(DIES_MID_SEND)
    run = subprocess.run([sys.executable, str(script), str(marker)], capture_output=True, text=True,
                         timeout=HANG_GUARD_S)
    assert marker.exists()  # it died in the middle of sending
    assert run.returncode == 1, run.stderr
    # The tool's line, and no traceback. The exit that could not wait skips the interpreter's exit
    # handlers, so multiprocessing's resource tracker may add its leaked-semaphore warning after it.
    assert run.stderr.startswith("a worker process died") and "Traceback" not in run.stderr, run.stderr


# ---- a process-group SIGTERM to a running tool ----------------------------------------------------------


@pytest.fixture(scope="module")
def long_input(tmp_path_factory):
    """Random DNA that keeps two translate workers busy for a while."""
    return write_random_dna_fasta(tmp_path_factory.mktemp("long") / "long.fa", 3000, 6000, seed=18)


def _workers_started(pid, count):
    """Pids of `pid`'s spawned pool workers once `count` of them run (None if it exits first)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline and is_alive(pid):
        workers = []
        for child in child_pids(pid):
            with open(f"/proc/{child}/cmdline", "rb") as handle:
                if b"spawn_main" in handle.read():
                    workers.append(child)
        if len(workers) >= count:
            return workers
        time.sleep(0.05)
    return None


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find the worker processes")
@pytest.mark.parametrize("attempt", REPEATS)
def test_a_process_group_sigterm_ends_a_running_tool_at_once(tmp_path, long_input, attempt):
    """A batch system's SIGTERM reaches the tool and its workers together: exit 143, one line, no
    hang, and no process left behind."""
    outdir = tmp_path / "out"
    tool = subprocess.Popen([sys.executable, os.path.join(BIN, "virnucpro-translate"), "--input", str(long_input),
                             "--outdir", str(outdir), "--chunk_size", "500", "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        workers = _workers_started(tool.pid, 2)
        if workers is None:
            pytest.fail(f"the tool ended before its workers started: {tool.communicate()[1]}")
        family = set(child_pids(tool.pid)) | set(workers)  # the workers and the resource tracker
        os.killpg(tool.pid, signal.SIGTERM)
        _, stderr = tool.communicate(timeout=HANG_GUARD_S)
    finally:
        if tool.poll() is None:
            os.killpg(tool.pid, signal.SIGKILL)
            tool.wait()
    assert tool.returncode == 143, stderr
    assert "Traceback" not in stderr and "virnucpro-translate: terminated" in stderr, stderr
    assert not outliving(family, HANG_GUARD_S), "processes outlived the tool"
