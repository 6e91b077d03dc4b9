"""DCQLoader: batches decoded by a background thread, FFCV-style; no worker processes.

The Numba kernels release the GIL and decode a batch on every core, so one thread that works
a few batches ahead keeps up with training without DataLoader's processes, and nothing is
copied between processes (a float32 CIFAR batch is 3 MB).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sized

import numpy as np
import torch
from torch.utils.data import Sampler

from .dataset import DCQDataset

_DONE = object()


class DCQLoader:
    """Iterate ``(images, labels)`` batches of a :class:`DCQDataset`.

    Args:
        dataset: the dataset (its ``augment``, ``dtype``, ``mean``/``std`` and ``layout`` apply).
        batch_size, shuffle, drop_last: as in DataLoader.
        sampler: any sampler of indices (e.g. ``DistributedSampler``); replaces ``shuffle``.
        prefetch: batches decoded ahead (default 3).
        seed: shuffling and augmentation are a function of ``(seed, epoch)`` (augmentation of
            ``(seed, epoch, batch)``); call :meth:`set_epoch` each epoch (or let the loader count
            the epochs it completes).
        pin_memory: return page-locked tensors (for fast, asynchronous copies to a GPU).

    :meth:`state_dict` / :meth:`load_state_dict` (torchdata's ``StatefulDataLoader`` protocol)
    resume mid-epoch exactly: the same remaining batches, the same augmentations.
    """

    def __init__(self, dataset: DCQDataset, batch_size: int, *, shuffle: bool = False, drop_last: bool = False,
                 sampler: Sampler[int] | None = None, prefetch: int = 3, seed: int = 0,
                 pin_memory: bool = False) -> None:
        if batch_size < 1 or prefetch < 1:
            raise ValueError("batch_size and prefetch must be >= 1")
        self.dataset, self.batch_size = dataset, batch_size
        self.shuffle, self.drop_last, self.sampler = shuffle, drop_last, sampler
        self.prefetch, self.seed, self.pin_memory = prefetch, seed, pin_memory
        self.epoch = 0
        self._yielded = 0  # batches of the current epoch handed out
        self._resume = 0  # batches of the current epoch to skip (after load_state_dict)

    def state_dict(self) -> dict[str, int]:
        """Where the loader stands: epoch and batches of it already handed out."""
        return {"version": 1, "epoch": self.epoch, "batches_done": self._yielded, "seed": self.seed,
                "batch_size": self.batch_size, "samples": len(self.dataset)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from :meth:`state_dict`: the next iteration continues the same epoch at the same batch."""
        for key in ("seed", "batch_size", "samples"):
            if state.get(key) != self.state_dict()[key]:
                raise ValueError(f"cannot resume: the saved state has {key} {state.get(key)}, this loader "
                                 f"{self.state_dict()[key]}")
        self.set_epoch(int(state["epoch"]))
        self._resume = self._yielded = int(state["batches_done"])

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (shuffle order and augmentations); also forwarded to the sampler."""
        self.epoch = epoch
        self._yielded = self._resume = 0
        set_sampler_epoch = getattr(self.sampler, "set_epoch", None)
        if set_sampler_epoch is not None:
            set_sampler_epoch(epoch)

    def _order(self) -> np.ndarray:
        if self.sampler is not None:
            return np.fromiter(iter(self.sampler), dtype=np.int64)
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(n, generator=g).numpy()

    def __len__(self) -> int:
        n = len(self.sampler) if isinstance(self.sampler, Sized) else len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        stops = range(self.batch_size, len(order) + (0 if self.drop_last else self.batch_size), self.batch_size)
        chunks = [order[s - self.batch_size : s] for s in stops]
        chunks = [c for c in chunks if len(c)]
        first, self._resume = self._resume, 0
        self._yielded = first
        results: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def work() -> None:
            try:
                for b in range(first, len(chunks)):
                    if stop.is_set():
                        return
                    gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_033 + b)
                    batch = self.dataset.get_batch(chunks[b], gen)
                    if self.pin_memory:
                        batch = tuple(t.pin_memory() for t in batch)
                    results.put(batch)
                results.put(_DONE)
            except BaseException as exc:  # hand the error to the consumer
                results.put(exc)

        thread = threading.Thread(target=work, name="DCQLoader", daemon=True)
        thread.start()
        completed = False
        try:
            while True:
                item = results.get()
                if item is _DONE:
                    completed = True
                    break
                if isinstance(item, BaseException):
                    raise item
                self._yielded += 1
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    results.get_nowait()
                except queue.Empty:
                    thread.join(0.01)
            if completed:
                self.set_epoch(self.epoch + 1)
