"""Atomic file writes, content hashes and cross-process locks: a file that matters is either
whole or absent, computed once however many jobs need it, and a run dir has one owner."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from marvel.errors import DirInUseError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it onto ``path``.

    The rename is atomic on POSIX, so readers (and a later run after a kill) never see a partial
    file. The temp file is removed if ``write`` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def unwritable_reason(path: str | os.PathLike) -> str | None:
    """Why a directory could not be created or written at ``path`` (None if it could), found
    without creating anything: the nearest existing ancestor must be a writable directory."""
    probe = Path(path).expanduser().absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def json_digest(obj: Any) -> str:
    """Hex SHA-256 of ``obj`` as canonical JSON (sorted keys): a key for what a setting
    determines (a cache entry, a resumable run)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remove_partial_writes(path: str | os.PathLike) -> None:
    """Delete the temp files interrupted ``atomic_write`` calls left beside ``path`` and its
    siblings of the same stem (``x.hdf5``, ``x.json``...): a SIGKILL skips their cleanup. They
    are never taken for the real file; this only reclaims the space. Call it where no writer of
    ``path`` can be running (under its lock, or at the start of the run that owns it)."""
    path = Path(path)
    for tmp in path.parent.glob(f".{path.stem}.*.tmp"):
        tmp.unlink(missing_ok=True)


@contextmanager
def locked(path: str | os.PathLike, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` across processes (through ``.locks/<name>.lock`` in
    its directory, as huggingface_hub does: the lock files stay, out of sight).

    Jobs of a parallel sweep that need the same cache entry take this lock, check whether the
    entry exists and compute it only if not: the first computes, the others wait (``on_wait``
    is called once when they have to) and then reuse it. The OS releases the lock of a killed
    process, so a crash never leaves the cache locked.
    """
    path = Path(path)
    lock_file = path.parent / ".locks" / f"{path.name}.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire()
    try:
        remove_partial_writes(path)  # a killed job's leftovers: nobody else writes it now
        yield
    finally:
        lock.release()


OWNER_FILE = ".owner"
_owned: dict[Path, int] = {}  # dir -> the descriptor whose lock this process holds


def own_dir(path: str | os.PathLike, override: str) -> None:
    """Make this process the one owner of the dir ``path`` until ``release_dir`` or its exit.

    An exclusive ``flock`` on ``<path>/.owner``, which then names the owner (pid, host, start
    time). A second process, whatever its config, gets ``DirInUseError`` naming the owner and
    ``override``, the setting that picks another dir. The OS drops the lock of a process that
    dies, so a killed run never blocks its rerun. Owning a dir twice in one process is a no-op.
    """
    path = Path(path).resolve()
    if path in _owned:
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise DirInUseError(
            f"{path} is in use by {holder}; wait for it to end, or pass {override}=<another dir>"
        ) from None
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode())
    _owned[path] = fd


def release_dir(path: str | os.PathLike) -> None:
    """End this process's ownership of ``path`` (no-op where it owns none)."""
    fd = _owned.pop(Path(path).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops its flock
