"""Writes that readers see whole or not at all, and full disks that say so.

A file or folder is written under a temporary sibling name (`<name>.incomplete`), flushed to disk and renamed into
place; a folder it replaces is renamed `<name>.deleting` before it is removed. A process killed at any moment thus
leaves, under the final name, the previous complete version or the new complete one, never a part of either; the
leftovers under the other two names are removed by the next write. Used by checkpoints, the best weights, the
exported model folder and `metrics.json`.
"""

import errno
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


INCOMPLETE_SUFFIX = ".incomplete"  # being written
DELETING_SUFFIX = ".deleting"  # being removed
UNFINISHED_SUFFIXES = (INCOMPLETE_SUFFIX, DELETING_SUFFIX)

# What torch's zip writer says when a write comes up short (it does not keep the OS error).
_TORCH_SHORT_WRITE = ("unexpected pos", "file write failed", "No space left on device")


class DiskFullError(OSError):
    """A write failed because the device holding its folder is full (`errno` is ENOSPC)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


@contextmanager
def explain_disk_full(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn a full disk while writing `what` into `folder` into a `DiskFullError` naming the folder: an OSError with
    errno ENOSPC, or torch's serialisation `RuntimeError` (`inline_container.cc: ... unexpected pos`)."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        full = (
            error.errno == errno.ENOSPC
            if isinstance(error, OSError)
            else any(text in str(error) for text in _TORCH_SHORT_WRITE)
        )
        if not full or isinstance(error, DiskFullError):
            raise
        raise DiskFullError(
            f"No space left on the device holding {folder} while writing {what}; free space there or choose another "
            f"output folder ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})."
        ) from error


def flush_to_disk(path: Path) -> None:
    """fsync a file, or a folder's files and the folder itself, so that a rename after this cannot outlive the data
    it names (a killed process loses nothing already written; a power cut can)."""
    files = [path] if path.is_file() else [child for child in path.rglob("*") if child.is_file()]
    for file_path in files:
        with open(file_path, "rb") as file:
            os.fsync(file.fileno())
    if path.is_dir():
        _flush_folder_entries(path)


def remove_unfinished(path: Path) -> None:
    """Remove what a killed write of `path` left: `<path>.incomplete` and `<path>.deleting`."""
    for suffix in UNFINISHED_SUFFIXES:
        leftover = path.with_name(path.name + suffix)
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        elif leftover.exists():
            leftover.unlink()


def move_into_place(written: Path, final: Path) -> None:
    """Rename the complete folder `written` to `final`, replacing a folder already there: it is renamed
    `<final>.deleting` first and removed last, so `final` names one complete folder or none, never a mix."""
    doomed = final.with_name(final.name + DELETING_SUFFIX)
    if final.exists():
        final.rename(doomed)
    written.rename(final)
    _flush_folder_entries(final.parent)
    if doomed.exists():
        shutil.rmtree(doomed)


def _flush_folder_entries(folder: Path) -> None:
    """fsync a folder itself (its list of names, e.g. after a rename), not the files in it."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_file_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """`write(temporary_path)`, then rename it to `path`: readers see the old file or the complete new one."""
    temporary = path.with_name(path.name + INCOMPLETE_SUFFIX)
    with explain_disk_full(path.parent, path.name):
        write(temporary)
        flush_to_disk(temporary)
    os.replace(temporary, path)


def write_folder_atomically(folder: Path, write: Callable[[Path], Any]) -> Path:
    """
    `write(temporary_folder)` into `<folder>.incomplete`, then put it in place of `folder` (see `move_into_place`).
    Until this returns `folder` is the previous complete version (or absent); if `write` fails it stays so and the
    temporary folder is removed. A `folder` that exists and is neither empty nor a model folder (no `config.json`)
    is refused rather than replaced: it is not ours.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file; expected a folder to write into.")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "config.json").is_file():
        raise FileExistsError(
            f"{folder} holds files and is not a model folder (no config.json); choose a new or empty folder, which "
            "will be replaced as a whole."
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_unfinished(folder)
    temporary = folder.with_name(folder.name + INCOMPLETE_SUFFIX)
    temporary.mkdir()
    try:
        with explain_disk_full(folder.parent, folder.name):
            write(temporary)
            flush_to_disk(temporary)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    move_into_place(temporary, folder)
    return folder


__all__ = [
    "DELETING_SUFFIX",
    "DiskFullError",
    "INCOMPLETE_SUFFIX",
    "UNFINISHED_SUFFIXES",
    "explain_disk_full",
    "flush_to_disk",
    "move_into_place",
    "remove_unfinished",
    "write_file_atomically",
    "write_folder_atomically",
]
