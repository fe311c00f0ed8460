"""Process pools shared by the tools: pick workers/batches/chunksize, stream results in order.

Built on documented APIs only: `concurrent.futures.ProcessPoolExecutor` with the spawn context.
`ordered_map` is the one way the tools run work in processes (translate, merge, extract). Every
pool worker (`start_pool`) ignores Ctrl-C (the parent handles it and ends the pool, so no worker
prints a traceback), logs like its parent, and exits by itself when its parent dies (kill -9, OOM
killer) or ends the pool after an error or a signal, so none lingers holding a model or GPU. A
worker that dies is the documented `BrokenProcessPool`, reported as one line.
"""

import collections
import concurrent.futures
import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import threading


def available_cpus():
    """CPUs this process may use (respects affinity masks set by schedulers such as Slurm)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def available_memory():
    """Bytes of memory this job may still use: the kernel's MemAvailable, or less under a cgroup
    (container, Slurm) limit. None when unknown."""
    found = []
    try:
        with open("/proc/meminfo") as handle:
            found += [int(line.split()[1]) * 1024 for line in handle if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as limit, open("/sys/fs/cgroup/memory.current") as used:
            text = limit.read().strip()
            if text != "max":
                found.append(int(text) - int(used.read()))
    except (OSError, ValueError):
        pass
    return max(0, min(found)) if found else None


def cap_workers(workers, memory_per_worker=None, what="worker"):
    """`workers` as asked, but no more than the CPUs this job may use and, with
    `memory_per_worker` (bytes, a rough estimate for a model stage), no more than fit in the memory
    available; each cut is one warning line. More processes than CPUs only compete for them, and
    every model worker holds its own copy of the model."""
    import logging

    log = logging.getLogger(__name__)
    if not isinstance(workers, int) or isinstance(workers, bool):
        return workers  # not a count: the option checks report it
    workers = max(1, workers)
    cpus = available_cpus()
    if workers > cpus:
        log.warning("--workers %d: only %d CPU(s) are available to this job; using %d", workers, cpus, cpus)
        workers = cpus
    memory = available_memory() if memory_per_worker else None
    if memory is not None and workers > 1:
        fit = max(1, memory // memory_per_worker)
        if workers > fit:
            log.warning("--workers %d: each %s needs about %.1f GiB and %.1f GiB are available; using %d", workers,
                        what, memory_per_worker / 2**30, memory / 2**30, fit)
            workers = fit
    return workers


def model_worker_memory(folder):
    """A rough estimate of the memory one process running the model in `folder` needs: its
    weight files once and a half (weights, then activations and allocator slack) plus 1 GiB for
    the interpreter, torch and a batch."""
    from .models.hub import weight_files

    weights = sum(os.path.getsize(path) for path in weight_files(folder))  # the files the loader reads
    return int(1.5 * weights) + (1 << 30)


def plan_pool(n_tasks, workers=None, max_chunksize=4):
    """Return (workers, chunksize) for about `n_tasks` batches: no more workers than tasks,
    and about four chunks per worker so slow batches balance without per-task overhead.
    The chunksize is capped so the work in flight (and memory) does not grow with the input."""
    n_tasks = max(int(n_tasks), 1)
    workers = max(1, min(cap_workers(workers) if workers else available_cpus(), n_tasks))
    chunksize = max(1, min(n_tasks // (workers * 4), max_chunksize))
    return workers, chunksize


def start_pool(workers, initializer=None, initargs=()):
    """A spawn pool of `workers` processes, each running `initializer(*initargs)` once (to keep
    across several `ordered_map` calls, e.g. a model loaded once per worker; close it with `with`)."""
    return Pool(workers, initializer, initargs)


class Pool:
    """A `ProcessPoolExecutor` (spawn) whose workers can be told to exit at once.

    Each worker watches the read end of a pipe only this process can write to: closing the write
    end (`close(clean=False)`) makes every worker exit where it stands, which no executor method
    does before Python 3.14 (`kill_workers`). `busy` counts the tasks handed out and not yet done."""

    def __init__(self, workers, initializer=None, initargs=()):
        context = multiprocessing.get_context("spawn")
        self._abort_watched, self._abort = context.Pipe(duplex=False)
        self.workers, self.busy = workers, 0
        self.processes = []  # its workers, as the executor starts them (on demand, within submit)
        self.executor = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker,
            initargs=(self._abort_watched, _log_setup(), initializer, initargs))

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        self.close(clean=kind is None)

    def submit(self, function, *args):
        """`executor.submit`; Ctrl-C is held back meanwhile, as a worker may be started here and
        must start with it blocked (the worker then ignores it); a Ctrl-C that came is raised after."""
        with _sigint_held():
            before = set(multiprocessing.active_children())
            future = self.executor.submit(function, *args)
            self.processes += [process for process in multiprocessing.active_children() if process not in before]
            return future

    def lost_a_worker(self):
        """Whether one of its workers has ended (only `close` ends them otherwise)."""
        return any(process.exitcode is not None for process in self.processes)

    def close(self, clean=True):
        """Shut the pool down: after its work (`clean`), or at once after an error or a signal,
        without waiting on workers that may be dead or busy: pending tasks are cancelled and the
        workers exit. Never waits on a worker (a batch system's SIGTERM may have killed some mid-task)."""
        if self._abort.closed:
            return
        if clean:
            self.executor.shutdown(wait=True)
        else:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self._abort.close()  # every worker still running exits now
        self._abort_watched.close()


def _log_setup():
    """(level, formatter) of this process's logging, for its workers to log the same way (the
    tool's name on every line); None when logging is not set up (a library caller)."""
    root = logging.getLogger()
    formatters = [handler.formatter for handler in root.handlers if type(handler.formatter) is logging.Formatter]
    return (root.level, formatters[0]) if formatters else None  # a plain Formatter pickles; others (pytest's) may not


def _init_worker(abort, log_setup, initializer, initargs):
    """Every pool worker: Ctrl-C is the parent's business; log like the parent; exit with the
    parent or when it ends the pool; then the caller's setup."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # held back while this process was started
    if log_setup is not None:
        level, formatter = log_setup
        handler = logging.StreamHandler()  # stderr, as the parent's
        handler.setFormatter(formatter)
        logging.basicConfig(level=level, handlers=[handler], force=True)
    exit_with_parent(abort)
    if initializer is not None:
        initializer(*initargs)


def exit_with_parent(abort=None):
    """A pool worker waits for tasks its parent sends: if the parent is killed nothing wakes it, and
    it would hold its memory (a model, a GPU) forever. Exit as soon as the parent is gone, or as
    soon as `abort` (the read end of a pipe only the parent writes) is closed by the parent."""
    import multiprocessing.connection

    parent = multiprocessing.parent_process()
    watched = [parent.sentinel] if parent is not None else []
    if abort is not None:
        watched.append(abort)
    if watched:
        def watch():
            multiprocessing.connection.wait(watched)
            os._exit(1)

        threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


@contextlib.contextmanager
def _sigint_held():
    """Block Ctrl-C in this thread for the block: a process started here inherits it blocked (and
    then ignores it); a Ctrl-C that arrives meanwhile is delivered when the block ends, not lost."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ordered_map(worker, tasks, workers, chunksize=1, max_in_flight=None, initializer=None, initargs=(), pools=None):
    """Yield worker(task) in task order: in this process for one worker, else in spawned processes.

    `tasks` may be a generator: at most `max_in_flight` tasks are read ahead of the results taken,
    so memory stays flat however large the input is. Tasks go `chunksize` at a time to a worker (a
    process round trip per few tasks, not per task). `initializer(*initargs)` runs once per worker
    process (in this process when there is one worker). `pools` (from `start_pool`, kept open by
    the caller): each chunk goes to the least busy of them (e.g. one single-process pool per device).
    A worker that dies (OOM killer, kill -9) is a one-line UserError, never a hang.
    """
    if workers <= 1 and pools is None:
        if initializer is not None:
            initializer(*initargs)
        yield from map(worker, tasks)
        return
    max_in_flight = max(max_in_flight or workers * chunksize * 2, chunksize)
    own = pools is None
    pools = pools or [start_pool(workers, initializer, initargs)]
    tasks, pending, in_flight, finished = iter(tasks), collections.deque(), 0, False
    try:
        while True:
            while in_flight + chunksize <= max_in_flight:
                chunk = list(itertools.islice(tasks, chunksize))
                if not chunk:
                    break
                pool = min(pools, key=lambda pool: pool.busy / pool.workers)
                with worker_death_as_one_line():
                    pending.append((pool.submit(_apply_chunk, worker, chunk), pool, len(chunk)))
                pool.busy += len(chunk)
                in_flight += len(chunk)
            if not pending:
                finished = True
                return
            future, pool, size = pending.popleft()
            results = result(future, pool)
            pool.busy -= size
            in_flight -= size
            yield from results
    finally:
        if own:
            pools[0].close(clean=finished)
        else:
            for future, pool, size in pending:  # stopped early: the caller's pools are free again
                future.cancel()
                pool.busy -= size


def result(future, pool):
    """`future.result()`, or a one-line error when a worker of `pool` died (OOM killer, kill -9).

    The executor notices a dead worker by itself, except one killed while sending a result: its
    reader thread then waits forever for the rest of that message. So the workers are looked at
    every second too."""
    from .errors import UserError

    with worker_death_as_one_line():
        while True:
            try:
                return future.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                if pool.lost_a_worker():
                    raise UserError(WORKER_DIED) from None


@contextlib.contextmanager
def worker_death_as_one_line():
    """A worker that dies (OOM killer, kill -9) breaks its pool: from then on both `submit` and
    `result` raise BrokenProcessPool. Either way: one line."""
    from .errors import UserError

    try:
        yield
    except concurrent.futures.process.BrokenProcessPool:
        raise UserError(WORKER_DIED) from None


WORKER_DIED = "a worker process died (killed, or out of memory?); rerun to resume"


def _apply_chunk(worker, chunk):
    return [worker(task) for task in chunk]
