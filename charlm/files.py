"""Writing files so that a crash or a power loss never leaves half of one, and the cache.

Everything charlm writes that must survive a crash goes through `replaced_atomically`:
the content is written under a temporary name beside its destination, flushed to disk
(fsync of every file written), renamed into place, and the rename itself is flushed
(fsync of the parent directory). A reader sees the old content or the new, never a mix.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> write_atomic(path, b"hello")
    >>> path.read_bytes()
    b'hello'
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TMP_PREFIX = ".tmp-"  # leftovers of a process killed while writing start with this


@contextmanager
def replaced_atomically(path: Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path (a file, or with `directory` a directory) beside `path`;
    when the block ends without an error it becomes `path` whole. On an error it is
    removed and `path` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=TMP_PREFIX))
    else:
        # The same suffix: some writers (Keras's model.save) insist on it.
        fd, name = tempfile.mkstemp(
            dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.", suffix=path.suffix
        )
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, readable_mode(directory))
        fsync_tree(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        remove(tmp)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_bytes(data)


@contextmanager
def open_atomic(path: Path) -> Iterator[BinaryIO]:
    """A binary stream whose content becomes `path` whole when the block ends."""
    with replaced_atomically(path) as tmp, open(tmp, "wb") as stream:
        yield stream


def link_or_copy(source: Path, target: Path) -> None:
    """Make `target` the same file as `source` (a hard link: no second copy to write), or
    a copy of it where the file system has no hard links. Only for files that are never
    written again in place, as none of charlm's saved files is (each is replaced whole)."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be read as a regular file, in the words an error message ends
    with ("does not exist", "is a symlink loop", "is a directory", ...), or None if it can.
    The one place that tells these cases apart, so that no message calls one another."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "is a broken symlink" if path.is_symlink() else "does not exist"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a symlink loop"
        return f"cannot be read ({error.strerror})"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, a device or a socket)"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied)"
    return None


def archive_problem(path: Path) -> str | None:
    """Why the zip archive at `path` (a .keras model, an .npz) is not whole, or None: a
    truncated file has no central directory, a damaged member fails its CRC. Reads it all."""
    problem = file_problem(path)
    if problem:
        return problem
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return "is truncated or corrupt"
    return f"is corrupt (its member {damaged} fails its checksum)" if damaged else None


def fsync_tree(path: Path) -> None:
    """Flush a file, or every file of a directory and the directory itself, to disk."""
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                fsync_path(child)
    fsync_path(path)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def readable_mode(directory: bool = False) -> int:
    """The mode open() or mkdir() would give (mkstemp and mkdtemp make things private)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def cache_dir() -> Path:
    """Where vocabularies and token files of corpora are kept between runs."""
    root = os.environ.get("CHARLM_CACHE_DIR") or Path.home() / ".cache" / "charlm"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
