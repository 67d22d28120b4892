"""
Micro-batching for the prediction API (serving_app.py): the requests one worker
has parsed in one turn of its event loop are predicted in one call of the model.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import numpy as np


class Batcher:
    """
    Micro-batching: the requests one worker has parsed in one turn of its event loop
    are predicted in one call of the model (scikit-learn's per-call checks cost more
    than the model for a few rows), then each gets its own rows of the answer.

    Only for a model whose `batch_ok` was checked before it was swapped in (its
    answer for rows predicted together equals its answers for each row alone, see
    _warm) and for requests of at most BATCH_MAX_ROWS rows. No request waits for
    another: the batch is whatever is ready when the loop gets to it (call_soon).
    When the call fails, each request of the batch is predicted alone, so an error
    stays with the request that caused it.
    """

    def __init__(self, predict: Callable[[Any, np.ndarray], Any], on_batched: Callable[[int], None]) -> None:
        # predict(loaded, array): one request alone; on_batched(n): n requests shared a call (metrics).
        self.predict = predict
        self.on_batched = on_batched
        self.pending: list[tuple[Any, np.ndarray, asyncio.Future]] = []
        self.scheduled = False

    def submit(self, loaded: Any, arr: np.ndarray) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.pending.append((loaded, arr, fut))
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self.flush)
        return fut

    def flush(self) -> None:
        self.scheduled = False
        pending, self.pending = self.pending, []
        groups: dict[int, list[tuple[Any, np.ndarray, asyncio.Future]]] = {}
        for item in pending:  # a swap between two requests: one call per model
            groups.setdefault(id(item[0]), []).append(item)
        for items in groups.values():
            if len(items) > 1 and self._together(items):
                continue
            for loaded, arr, fut in items:
                try:
                    pred = self.predict(loaded, arr)  # batch_ok implies array_ok: the array is the input
                except Exception as exc:  # noqa: BLE001 - the request's own error
                    if not fut.done():
                        fut.set_exception(exc)
                    continue
                if not fut.done():
                    fut.set_result(pred)

    def _together(self, items: list[tuple[Any, np.ndarray, asyncio.Future]]) -> bool:
        loaded = items[0][0]
        try:
            pred = loaded.fast(np.concatenate([arr for _, arr, _ in items]))
        except Exception:  # noqa: BLE001 - predicted one by one instead
            return False
        total = sum(len(arr) for _, arr, _ in items)
        if not isinstance(pred, np.ndarray) or len(pred) != total:
            return False
        offset = 0
        for _, arr, fut in items:
            n = len(arr)
            if not fut.done():
                fut.set_result(pred[offset : offset + n])
            offset += n
        self.on_batched(len(items))
        return True
