"""Spawn-pool plumbing shared by the tools: pick workers/batches/chunksize, stream results in order.

`ordered_map` is the one process-pool helper (translate, merge and extract use it). Its workers
ignore Ctrl-C (the parent handles it and ends the pool, so no worker prints a traceback) and exit
by themselves when their parent dies (kill -9, OOM killer), so none lingers holding a model or GPU.
"""

import contextlib
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


def exit_with_parent():
    """A pool worker waits on a queue its parent feeds: if the parent is killed nothing wakes it,
    and it would hold its memory (a model, a GPU) forever. Exit as soon as the parent is gone."""
    import multiprocessing.connection

    parent = multiprocessing.parent_process()
    if parent is not None:
        def watch():
            multiprocessing.connection.wait([parent.sentinel])
            os._exit(1)

        threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(initializer, initargs):
    """Every pool worker: Ctrl-C is the parent's business; die with the parent; then the caller's setup."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent()
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore Ctrl-C while pool workers are started (a spawned process keeps an ignored SIGINT)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _bounded(tasks, slots, stop):
    """Hand out tasks only while a slot is free; the consumer frees one per result taken."""
    for task in tasks:
        slots.acquire()
        if stop.is_set():
            return
        yield task


def start_pool(workers, initializer=None, initargs=()):
    """A spawn pool of `workers` processes, each running `initializer(*initargs)` once (to keep
    across several `ordered_map` calls, e.g. a model loaded once per worker; close it with `with`)."""
    ctx = multiprocessing.get_context("spawn")
    with _sigint_ignored():  # workers inherit it: a Ctrl-C while they still import is no traceback either
        return ctx.Pool(workers, initializer=_init_worker, initargs=(initializer, initargs))


def ordered_map(worker, tasks, workers, chunksize=1, max_in_flight=None, initializer=None, initargs=(), pool=None):
    """Yield worker(task) in task order: in this process for one worker, else with a spawn pool's imap.

    `tasks` may be a generator. Pool.imap alone would read it to the end at once (its feeder
    thread has no back-pressure), so at most `max_in_flight` tasks are read ahead: memory stays
    flat however large the input is. `initializer(*initargs)` runs once per worker process (in
    this process when there is one worker). `pool` (from `start_pool`): use it, and leave it open.
    """
    if workers <= 1 and pool is None:
        if initializer is not None:
            initializer(*initargs)
        yield from map(worker, tasks)
        return
    max_in_flight = max(max_in_flight or workers * chunksize * 2, 2 * chunksize)
    slots, stop = threading.Semaphore(max_in_flight), threading.Event()
    own = pool is None
    pool = pool or start_pool(workers, initializer, initargs)
    finished = False
    try:
        processes = list(pool._pool)  # a pool never retires a healthy worker (no maxtasksperchild)
        # Chunks made here rather than by imap, whose chunked form cannot wait with a timeout.
        chunks = _chunked(worker, _bounded(tasks, slots, stop), chunksize)
        results = pool.imap(_apply_chunk, chunks)
        while True:
            try:
                chunk = _next_result(results, processes)
            except StopIteration:
                finished = True
                return
            for result in chunk:
                slots.release()
                yield result
    finally:  # stopped early (error, Ctrl-C): unblock the pool's feeder so the pool can end
        stop.set()
        slots.release(max_in_flight)
        if own:
            end_pool(pool, clean=finished)


def _next_result(results, processes, poll_seconds=1.0):
    """The next result of `pool.imap`, or a one-line error when one of the pool's `processes` died
    (OOM killer, kill -9): the pool would start a replacement but never redo the lost tasks, and
    imap would wait forever."""
    from .errors import UserError

    while True:
        try:
            return results.next(timeout=poll_seconds)
        except multiprocessing.TimeoutError:
            dead = [process for process in processes if process.exitcode is not None]
            if dead:
                raise UserError(f"a worker process died (exit status {dead[0].exitcode}: killed, or out of memory?); "
                                "rerun to resume") from None


def _chunked(worker, tasks, size):
    """(worker, [up to `size` tasks]) in order."""
    chunk = []
    for task in tasks:
        chunk.append(task)
        if len(chunk) == size:
            yield worker, chunk
            chunk = []
    if chunk:
        yield worker, chunk


def _apply_chunk(item):
    worker, chunk = item
    return [worker(task) for task in chunk]


def end_pool(pool, clean=True):
    """End a pool. After an error or a signal, its workers are killed and `Pool.terminate()` is not
    called: a worker killed by the same signal (a batch system's SIGTERM reaches the whole process
    group) may have died holding the pool's task-queue lock, and terminate() would wait for that
    lock forever. The pool's own threads are daemons and go with the process."""
    from multiprocessing.pool import TERMINATE

    if clean:
        pool.terminate()
        pool.join()
        return
    pool._state = pool._worker_handler._state = TERMINATE  # no replacement workers
    pool._terminate.cancel()  # nor terminate() at interpreter exit
    for process in pool._pool:
        process.kill()
    for process in pool._pool:
        process.join(5)
