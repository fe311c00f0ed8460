"""Spawn-pool plumbing shared by the tools: pick workers/batches/chunksize, stream results in order."""

import multiprocessing
import os
import threading


def available_cpus():
    """CPUs this process may use (respects affinity masks set by schedulers such as Slurm)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def plan_pool(n_tasks, workers=None, max_chunksize=4):
    """Return (workers, chunksize) for about `n_tasks` batches: no more workers than tasks,
    and about four chunks per worker so slow batches balance without per-task overhead.
    The chunksize is capped so the work in flight (and memory) does not grow with the input."""
    n_tasks = max(int(n_tasks), 1)
    workers = max(1, min(workers or available_cpus(), n_tasks))
    chunksize = max(1, min(n_tasks // (workers * 4), max_chunksize))
    return workers, chunksize


def _bounded(tasks, slots):
    """Hand out tasks only while a slot is free; the consumer frees one per result taken."""
    for task in tasks:
        slots.acquire()
        yield task


def ordered_map(worker, tasks, workers, chunksize=1, max_in_flight=None):
    """Yield worker(task) in task order: in this process for one worker, else with a spawn pool's imap.

    `tasks` may be a generator. Pool.imap alone would read it to the end at once (its feeder
    thread has no back-pressure), so at most `max_in_flight` tasks are read ahead: memory stays
    flat however large the input is.
    """
    if workers <= 1:
        yield from map(worker, tasks)
        return
    max_in_flight = max(max_in_flight or workers * chunksize * 2, 2 * chunksize)
    slots = threading.Semaphore(max_in_flight)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        for result in pool.imap(worker, _bounded(tasks, slots), chunksize=chunksize):
            slots.release()
            yield result
