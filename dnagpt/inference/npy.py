"""A ``.npy`` array written in row blocks, memory flat whatever its size, and replaced atomically when complete.

``numpy.lib.format.open_memmap`` lays the file out (the header for the final shape and dtype, a sparse body); blocks of
rows are then written at their place with positioned writes rather than through the map, so that pages already written
never count in the process's resident memory. The file appears under its name only once every row is written
(:func:`dnagpt.checkpointing.atomic_path`); an interrupted run leaves no half array behind.

>>> import tempfile, numpy as np
>>> path = Path(tempfile.mkdtemp()) / "x.npy"
>>> with npy_rows(path, (3, 2)) as write:
...     write(2, np.array([[5, 6]])); write(0, np.array([[1, 2], [3, 4]]))
>>> np.load(path).tolist()
[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from dnagpt.checkpointing import atomic_path

__all__ = ["RowWriter", "npy_rows"]

RowWriter = Callable[[int, np.ndarray], None]  # (first row, (n, *row_shape) block)


@contextmanager
def npy_rows(path: str | Path, shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> Iterator[RowWriter]:
    """Yield ``write(first_row, block)`` for an array of ``shape`` saved at ``path`` when the block ends without error."""
    dtype = np.dtype(dtype)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    with atomic_path(path) as partial:
        layout = open_memmap(partial, mode="w+", dtype=dtype, shape=shape)
        offset = layout.offset
        del layout  # unmapped: rows go through the file
        with open(partial, "r+b") as fh:

            def write(first_row: int, block: np.ndarray) -> None:
                data = np.ascontiguousarray(block, dtype=dtype)
                if data.shape[1:] != shape[1:] or not 0 <= first_row <= shape[0] - len(data):
                    raise ValueError(f"rows {first_row}.. of shape {data.shape} do not fit the array's {shape}")
                os.pwrite(fh.fileno(), data.tobytes(), offset + first_row * row_bytes)

            yield write
