"""Micro-batching: requests that arrive within a short window share one forward pass, grouped by image size."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class MicroBatcher:
    """Collect requests for `window_s` after the first one (at most `max_batch`), then run each group of
    same-size images as one batch on a single worker thread (so forwards never overlap); the next batch collects
    while one runs. `window_s = 0` turns batching off: one image per forward.
    """

    def __init__(self, run: Callable[[Sequence[np.ndarray]], np.ndarray], window_s: float = 0.01,
                 max_batch: int = 8) -> None:
        self.run = run
        self.window_s = window_s
        self.max_batch = max_batch if window_s > 0 else 1
        self.executor: ThreadPoolExecutor | None = None
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None
        self.batches = 0
        self.images = 0

    async def submit(self, image: np.ndarray) -> np.ndarray:
        """The image's K×H×W probabilities, computed in whichever batch it joins."""
        if self.worker is None or self.worker.done():  # started in the serving event loop, on the first request
            self.executor = self.executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="segwise-forward")
            self.queue = asyncio.Queue()
            self.worker = asyncio.create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((image, future))
        return await future

    async def _collect(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        pending = [await self.queue.get()]
        deadline = time.monotonic() + self.window_s
        while len(pending) < self.max_batch:
            left = deadline - time.monotonic()
            try:  # past the window, only what is already queued joins
                pending.append(await asyncio.wait_for(self.queue.get(), left) if left > 0 else self.queue.get_nowait())
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
        return pending

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            groups: dict[tuple[int, int], list[tuple[np.ndarray, asyncio.Future]]] = {}
            for item in await self._collect():
                groups.setdefault(item[0].shape[:2], []).append(item)
            for group in groups.values():
                try:
                    probs = await loop.run_in_executor(self.executor, self.run, [image for image, _ in group])
                except Exception as error:  # noqa: BLE001 - handed to every waiting request; the worker lives on
                    for _, future in group:
                        if not future.done():
                            future.set_exception(error)
                    continue
                self.batches += 1
                self.images += len(group)
                for (_, future), result in zip(group, probs):
                    if not future.done():  # a client that went away cancels its future
                        future.set_result(result)

    async def close(self) -> None:
        """Stop the worker and its thread (the app's shutdown); a later request starts them again."""
        if self.worker is not None:
            self.worker.cancel()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.worker = self.executor = None
