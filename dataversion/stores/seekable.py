"""What every read-only, seekable file object we hand out shares: a position over `size`
bytes. Subclasses say where the bytes come from (`_read_at`); reading, seeking and the
file-object protocol are written once here.

Used by the S3 store's ranged file (`stores/s3.py`) and by `dv://`'s served files
(`interop/fsspec.py`).
"""

from __future__ import annotations

import io


class ReadOnlySeekable(io.RawIOBase):
    """A read-only file over `size` bytes with a position. Subclasses implement
    `_read_at(offset, n)` (at most `n` bytes from `offset`, any bytes-like object)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence not in (io.SEEK_SET, io.SEEK_CUR, io.SEEK_END):
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        base = (0, self._pos, self.size)[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _remaining(self, n: int | None) -> int:
        """How many bytes a read of `n` (None or < 0: to the end) returns from here."""
        if self.closed:
            raise ValueError("I/O operation on closed file")
        left = max(0, self.size - self._pos)
        return left if n is None or n < 0 else min(n, left)

    def _read_at(self, offset: int, n: int):
        raise NotImplementedError

    def _take(self, n: int | None):
        """Up to `n` bytes from the position (as `_read_at` returns them); advances."""
        n = self._remaining(n)
        if n == 0:
            return b""
        data = self._read_at(self._pos, n)
        self._pos += len(data)
        return data

    def read(self, n: int | None = -1) -> bytes:
        data = self._take(n)
        return data if isinstance(data, bytes) else bytes(data)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, b) -> int:
        data = self._take(len(memoryview(b).cast("B")))
        n = len(data)
        memoryview(b).cast("B")[:n] = data
        return n
