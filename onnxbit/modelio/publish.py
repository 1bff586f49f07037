"""Publish several output files together: all of them or none.

Every file is first written in full to a temporary file next to its
destination (same folder, so the final rename is atomic and needs no space),
then the temporaries are renamed into place in the order they were staged.
A failure while staging (a full disk, a missing folder, a signal) removes
every temporary file and leaves every destination as it was.

Modes follow what a normal tool does: a new file gets 0666 minus the umask,
a replaced file keeps its mode. SIGTERM and SIGHUP, like Ctrl-C, stop the
write and clean up (the handlers are only installed on the main thread).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import stat
import threading
from pathlib import Path
from typing import BinaryIO, Iterator

from onnxbit.errors import OutputPathError


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived while outputs were being written."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no way to read it but to set it: put it straight back
    os.umask(mask)
    return mask


def mode_for(destination: Path) -> int:
    """Permission bits an output at `destination` should get."""
    try:
        return stat.S_IMODE(os.stat(destination).st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


class Publication:
    """Stage output files, then publish them all with :meth:`commit`.

        with Publication() as pub:
            with pub.create("out.onnx") as f:
                f.write(...)
            pub.commit()

    Leaving the block without commit() (an exception, a signal) removes
    every staged file."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path, int]] = []  # (temporary, destination, mode)
        self._committed = False
        self._old_handlers: dict[int, object] = {}
        self._blocked_mask: set | None = None

    def __enter__(self) -> "Publication":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGHUP):
                self._old_handlers[signum] = signal.signal(signum, _raise_interrupted)
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if not self._committed:
                self.discard()
        finally:
            for signum, handler in self._old_handlers.items():
                signal.signal(signum, handler)
            self._old_handlers.clear()
            if self._blocked_mask is not None:
                # A signal that came during commit() is delivered now, to the
                # caller's handler, with every output complete.
                signal.pthread_sigmask(signal.SIG_SETMASK, self._blocked_mask)
                self._blocked_mask = None

    @property
    def destinations(self) -> list[Path]:
        return [destination for _, destination, _ in self._staged]

    def staged_path(self, destination: str | os.PathLike) -> Path:
        """A new, empty temporary file for `destination` (which is published
        to when commit() runs). The caller writes it by path."""
        destination = Path(destination)
        folder = check_destination_folder(destination)
        mode = mode_for(destination)
        for _ in range(100):
            temporary = folder / f".{destination.name}.{secrets.token_hex(4)}.tmp"
            # Listed before it exists: a signal between creating and listing
            # it would otherwise leave it behind.
            entry = (temporary, destination, mode)
            self._staged.append(entry)
            try:
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                self._staged.remove(entry)
                continue
            except OSError as exc:
                self._staged.remove(entry)
                raise OutputPathError(f"cannot write {destination}: {exc.strerror}") from None
            os.close(fd)
            return temporary
        raise OutputPathError(f"cannot create a temporary file next to {destination}")

    @contextlib.contextmanager
    def create(self, destination: str | os.PathLike) -> Iterator[BinaryIO]:
        """A binary file object writing the staged copy of `destination`."""
        temporary = self.staged_path(destination)
        try:
            with open(temporary, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            if exc.errno not in _WRITE_ERRNOS:
                raise
            raise _write_error(Path(destination), exc) from None

    def write_bytes(self, destination: str | os.PathLike, data: bytes) -> None:
        with self.create(destination) as handle:
            handle.write(data)

    def staged_file(self, destination: str | os.PathLike) -> Path:
        """The temporary file that holds `destination` until commit()."""
        destination = Path(destination)
        for temporary, staged, _ in self._staged:
            if staged == destination:
                return temporary
        raise KeyError(f"{destination} is not staged")

    def unstage(self, destination: str | os.PathLike) -> None:
        """Drop the staged copy of `destination` (it will not be published)."""
        destination = Path(destination)
        for entry in [e for e in self._staged if e[1] == destination]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry[0])
            self._staged.remove(entry)

    def commit(self) -> None:
        """Rename every staged file into place, in staging order. Signals wait
        until every rename is done (see __exit__), so they cannot split the set."""
        if self._old_handlers:
            self._blocked_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        folders = set()
        for temporary, destination, mode in self._staged:
            os.chmod(temporary, mode)
            os.replace(temporary, destination)
            folders.add(destination.parent)
        for folder in folders:
            _fsync_folder(folder)
        self._committed = True

    def discard(self) -> None:
        for temporary, _, _ in self._staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        self._staged.clear()


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}
# Failures of the write itself (as opposed to, say, reading the input while writing).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def _write_error(destination: Path, exc: OSError) -> OutputPathError:
    if exc.errno == errno.ENOSPC:
        return OutputPathError(f"cannot write {destination}: no space left on the device "
                               "(nothing was written; free some space and run again)")
    return OutputPathError(f"cannot write {destination}: {exc.strerror or exc}")


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_destination_folder(destination: str | os.PathLike) -> Path:
    """The folder `destination` would be written in; OutputPathError when it does not exist."""
    destination = Path(destination)
    if not destination.parent.is_dir():
        raise OutputPathError(f"cannot write {destination}: folder {destination.parent} does not exist")
    return destination.parent
