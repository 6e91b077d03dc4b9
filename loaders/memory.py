"""Where a decoded batch is written: in a DataLoader worker, shared memory from the start."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import get_worker_info


def empty_batch(shape: tuple[int, ...], dtype: np.dtype | type, shared: bool | None = None) -> torch.Tensor:
    """An uninitialised tensor for a batch to be decoded into.

    ``shared`` (default: whether this is a DataLoader worker) allocates it in shared memory, as
    the default collate of a worker allocates its batches, so sending it to the main process
    copies nothing (a tensor made elsewhere is copied into shared memory when sent). Otherwise
    the memory is NumPy's, which asks the kernel for huge pages: fewer page faults per batch.
    """
    if shared is None:
        shared = get_worker_info() is not None
    if not shared:
        return torch.from_numpy(np.empty(shape, dtype))
    kind = torch.from_numpy(np.empty(0, dtype))
    return kind.new(kind._typed_storage()._new_shared(int(np.prod(shape)))).view(shape)
