"""Many images, overlapped: a reader pool decodes ahead, images of one size go through the network in batches, and
a writer pool encodes and writes the outputs. Queues are bounded, so memory stays bounded whatever the number of
images. Threads suffice: OpenCV, tifffile and torch release the GIL while they work."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Reader and writer threads each when none are asked for: the cores, at most 4."""
    return min(4, os.cpu_count() or 1)


class _Inline(Executor):
    """`workers=0`: each task runs at once in the calling thread (the one-at-a-time path)."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        future: Future[R] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:  # noqa: BLE001 - re-raised by future.result() where it is collected
            future.set_exception(error)
        return future


def _pool(workers: int, name: str) -> Executor:
    return ThreadPoolExecutor(workers, thread_name_prefix=f"segwise-{name}") if workers else _Inline()


def _read_ahead(items: Sequence[T], read: Callable[[T], np.ndarray], pool: Executor,
                ahead: int) -> Iterator[tuple[int, np.ndarray]]:
    """(index, image) in input order, with up to `ahead` reads submitted before the one being consumed."""
    queued: deque[tuple[int, Future[np.ndarray]]] = deque()
    for index, item in enumerate(items):
        queued.append((index, pool.submit(read, item)))
        if len(queued) >= ahead:
            first, future = queued.popleft()
            yield first, future.result()
    while queued:
        first, future = queued.popleft()
        yield first, future.result()


def run_pipeline(items: Sequence[T], read: Callable[[T], np.ndarray],
                 forward: Callable[[list[np.ndarray], list[T]], np.ndarray],
                 write: Callable[[T, np.ndarray, np.ndarray], R], *, batch: int, workers: int,
                 done: Callable[[int], None] | None = None) -> list[R]:
    """`write(item, image, output)` of every item, returned in input order; `read(item)` → image runs in a pool of
    `workers` threads, `forward(images, items)` → N×… outputs in the calling thread on up to `batch` images of one
    shape, `write` in a second pool of `workers` threads (`workers=0`: everything in the calling thread). `done(n)`
    is called as outputs are written.

    The first error of any step is raised in the calling thread; reads not yet started are dropped and writes under
    way finish before it propagates (each output is written atomically, so none is left half-written).
    """
    results: list[Any] = [None] * len(items)
    ahead = batch + 2 * max(workers, 1)  # images read ahead, and outputs queued for writing, at most
    readers, writers = _pool(workers, "read"), _pool(workers, "write")
    groups: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    writes: deque[tuple[int, Future[R]]] = deque()

    def collect(limit: int) -> None:
        while len(writes) > limit:
            index, future = writes.popleft()
            results[index] = future.result()
            if done is not None:
                done(1)

    def flush(shape: tuple[int, ...]) -> None:
        group = groups.pop(shape)
        outputs = forward([image for _, image in group], [items[index] for index, _ in group])
        for (index, image), output in zip(group, outputs):
            writes.append((index, writers.submit(write, items[index], image, output)))
        collect(ahead)

    try:
        for index, image in _read_ahead(items, read, readers, ahead):
            groups.setdefault(image.shape, []).append((index, image))
            if len(groups[image.shape]) == batch:
                flush(image.shape)
            elif sum(map(len, groups.values())) >= 2 * ahead:  # many sizes: forward the largest part-batch
                flush(max(groups, key=lambda shape: len(groups[shape])))
        while groups:
            flush(next(iter(groups)))
        collect(0)
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True, cancel_futures=True)
    return results
