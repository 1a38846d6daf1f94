"""file:// store: a directory on a local disk (the embedded default).

Writes go to a temporary file in the same directory, fsynced, and are renamed into place
(`stores.atomic`), so a reader never sees a half-written object, a killed writer leaves only
a temp file and a power cut loses no acknowledged write. Compare-and-swap holds a per-key
`filelock.FileLock` kept under `.locks/` at the root, not beside the object: a lock file is
never deleted (that would split its waiters across inodes), and one left beside
`refs/heads/a/b` would keep the directory `refs/heads/a` alive after the ref is gone, so a ref
`refs/heads/a` could never be created again.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

from filelock import FileLock

from ..errors import BadInputError, ConflictError, NotFoundError, StoreError
from ..hashing import object_id
from .atomic import TMP_PREFIX as _TMP_PREFIX
from .atomic import fsync_dir, move_atomic, write_temp
from .base import ObjectInfo, Store

LOCKS_DIR = ".locks"


def _syncfs(path: str) -> None:
    """Flush the filesystem holding `path` (Linux syncfs; elsewhere a global sync)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


class LocalStore(Store):
    def __init__(self, root: str, *, create: bool = False):
        super().__init__()
        self.root = os.path.abspath(root)
        self.url = "file://" + self.root
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise BadInputError(f"{self.root} is a file, not a repository directory",
                                hint="a repository is a directory: give a path that is one, or one that does not exist yet")
        if create:
            try:
                os.makedirs(self.root, exist_ok=True)
            except (FileExistsError, NotADirectoryError) as e:
                raise BadInputError(f"cannot create a repository at {self.url}: {e.filename} is a file, not a directory",
                                    hint="give a path whose parent directories are directories") from None
        elif not os.path.isdir(self.root):
            raise NotFoundError(f"no dataversion repository at {self.url}: the directory does not exist", hint="create one with `dataversion init`")

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise BadInputError(f"invalid object key {key!r}")
        return os.path.join(self.root, key)

    def _lock(self, key: str) -> FileLock:
        return FileLock(os.path.join(self.root, LOCKS_DIR, object_id(key.encode()) + ".lock"))

    def get(self, key: str) -> bytes:
        self.stats["GET"] += 1
        try:
            with open(self._path(key), "rb") as f:
                data = f.read()
            self.stats["GET_BYTES"] += len(data)
            return data
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            # NotADirectoryError: a shorter key on the path is an object (`a` for `a/b`)
            raise NotFoundError(f"object {key} not found in {self.url}") from None

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        self.stats["GET"] += 1
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"object {key} not found in {self.url}") from None
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        self.stats["GET_BYTES"] += len(data)
        return data

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, object_id(data)

    def _write_temp(self, path: str, data: bytes, *, fsync: bool = True) -> str:
        try:
            return write_temp(os.path.dirname(path), data, fsync=fsync)
        except (NotADirectoryError, FileExistsError) as e:
            # makedirs met a file where a directory of the key's path should be.
            key = os.path.relpath(path, self.root)
            raise StoreError(f"cannot write {key} in {self.url}: a shorter key on its path is an object, "
                             "so it cannot hold other keys") from e

    def put(self, key: str, data: bytes) -> None:
        self._put(key, data, fsync=True)

    def put_transient(self, key: str, data: bytes) -> None:
        """Renamed into place whole, not fsynced (two fewer disk flushes per commit)."""
        self._put(key, data, fsync=False)

    def _put(self, key: str, data: bytes, *, fsync: bool) -> None:
        self.stats["PUT"] += 1
        self.stats["PUT_BYTES"] += len(data)
        path = self._path(key)
        try:
            move_atomic(self._write_temp(path, data, fsync=fsync), path, fsync=fsync)
        except OSError as e:
            raise StoreError(f"cannot write {key} in {self.url}: {e.strerror}") from e

    def put_file(self, key: str, path: str) -> None:
        with open(path, "rb") as f:
            self.put(key, f.read())

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Many immutable objects, durable when this returns, each renamed into place whole.
        Few: their temp files fsynced in parallel, then renamed, then each directory fsynced
        once. Many: no per-file fsync, one `syncfs` of the repository's filesystem."""
        if not items:
            return
        self.stats["PUT"] += len(items)
        self.stats["PUT_BYTES"] += sum(len(d) for _, d in items)
        few = len(items) <= 64

        def temp(kv: tuple[str, bytes]) -> tuple[str, str]:
            path = self._path(kv[0])
            return self._write_temp(path, kv[1], fsync=few), path

        try:
            if few and len(items) > 1:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=8) as pool:
                    temps = list(pool.map(temp, items))
            else:
                temps = [temp(kv) for kv in items]
            for tmp, path in temps:
                os.replace(tmp, path)
        except OSError as e:
            raise StoreError(f"cannot write objects in {self.url}: {e.strerror}") from e
        if few:
            directories = sorted({os.path.dirname(p) for _, p in temps})
            if len(directories) > 1:  # the flushes of several directories overlap on the device
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=8) as pool:
                    list(pool.map(fsync_dir, directories))
            else:
                fsync_dir(directories[0])
        else:
            _syncfs(self.root)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self.stats["PUT"] += 1
        self.stats["PUT_BYTES"] += len(data)
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)  # atomic create-only: fails if the name exists
            fsync_dir(os.path.dirname(path))
            return True
        except FileExistsError:
            if os.path.isdir(path):
                raise StoreError(f"cannot create {key} in {self.url}: it is a directory holding other keys") from None
            return False
        finally:
            os.unlink(tmp)

    def put_if_match(self, key: str, data: bytes, token: str) -> None:
        self.stats["PUT"] += 1
        path = self._path(key)
        with self._lock(key):
            try:
                with open(path, "rb") as f:
                    current = object_id(f.read())
            except FileNotFoundError:
                raise ConflictError(f"{key} was deleted by another writer") from None
            if current != token:
                raise ConflictError(f"{key} was updated by another writer")
            move_atomic(self._write_temp(path, data), path)

    def touch(self, key: str) -> None:
        try:
            os.utime(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StoreError(f"cannot refresh {key} in {self.url}: {e.strerror}") from e

    def delete(self, key: str) -> None:
        self.stats["DELETE"] += 1
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def delete_if_match(self, key: str, token: str) -> None:
        self.stats["DELETE"] += 1
        path = self._path(key)
        with self._lock(key):
            try:
                with open(path, "rb") as f:
                    current = object_id(f.read())
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise ConflictError(f"{key} was deleted by another writer") from None
            if current != token:
                raise ConflictError(f"{key} was updated by another writer")
            os.unlink(path)
            directory = os.path.dirname(path)
            fsync_dir(directory)
        self._prune_empty_dirs(directory)

    def _prune_empty_dirs(self, directory: str) -> None:
        """Remove empty directories from `directory` up to the root, as git does for refs, so a
        deleted `refs/heads/a/b` leaves no directory `refs/heads/a` in the way of a ref of that
        name. A writer that makes the directory again meanwhile is fine: `write_temp` retries."""
        while directory != self.root and directory.startswith(self.root + os.sep):
            try:
                os.rmdir(directory)
            except OSError:
                return  # not empty (or gone): stop
            directory = os.path.dirname(directory)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self.stats["LIST"] += 1
        # Walk only the directory that can hold the prefix.
        head, _, _ = prefix.rpartition("/")
        base = os.path.join(self.root, head) if head else self.root
        if not os.path.isdir(base):
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            for name in sorted(filenames):
                if name.startswith(_TMP_PREFIX) or name.endswith(".lock"):
                    continue
                key = rel_dir + name
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    def list_temp(self) -> Iterator[ObjectInfo]:
        """Temp files left by killed writers (garbage for gc)."""
        for dirpath, _, filenames in os.walk(self.root):
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
                    p = os.path.join(dirpath, name)
                    try:
                        st = os.stat(p)
                    except FileNotFoundError:
                        continue
                    yield ObjectInfo(os.path.relpath(p, self.root).replace(os.sep, "/"), st.st_size, st.st_mtime)

    def exists(self, key: str) -> bool:
        self.stats["HEAD"] += 1
        return os.path.isfile(self._path(key))

    def local_path(self, key: str) -> str | None:
        return self._path(key)

    def open_input(self, key: str):
        """The file itself (seekable), counting the bytes read into `stats["GET_BYTES"]`."""
        stats = self.stats

        class _Counting(io.FileIO):
            def readinto(self, b):  # type: ignore[override]
                n = super().readinto(b)
                stats["GET_BYTES"] += n or 0
                return n

        try:
            f = _Counting(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"object {key} not found in {self.url}") from None
        stats["GET"] += 1
        return io.BufferedReader(f)

