"""Safe unpacking of the tar archives pulled from remote hosts, on every supported Python.

tarfile's extraction filters (``filter="data"``) exist from Python 3.11.4 and 3.12; Debian's
stock 3.11.2 has none. ``safe_extractall`` checks every member itself first, identically on
every version, and then uses the ``data`` filter where it exists. Refused: absolute paths,
``..`` components, members below a symbolic link of the archive, symbolic links with an
absolute target or one that leaves the folder, hard links to anything outside the archive's
own members, devices and FIFOs. Without the filter, set-user/group-id bits and group/other
write bits are cleared and files belong to the user unpacking.
"""

from __future__ import annotations

import copy
import os
import posixpath
import tarfile
from pathlib import Path

HAS_FILTERS = hasattr(tarfile, "data_filter")


class UnsafeArchiveError(ValueError):
    """A member of the archive would land outside the folder or is not a plain file,
    folder or inside link."""


def safe_extractall(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract every member of ``tar`` into ``dest`` or raise ``UnsafeArchiveError`` before
    anything is written."""
    members = tar.getmembers()
    _check_members(members)
    if HAS_FILTERS:
        tar.extractall(dest, filter="data")
        return
    tar.extractall(dest, members=[_tamed(m) for m in members])  # noqa: S202 (checked above)


def _check_members(members: list[tarfile.TarInfo]) -> None:
    links: set[str] = set()
    names: set[str] = set()
    for m in members:
        name = _relative(m.name, m.name)
        if any(name == link or name.startswith(link + "/") for link in links):
            raise UnsafeArchiveError(f"{m.name!r} lies below the symbolic link of the archive")
        if m.issym():
            target = m.linkname
            if target.startswith("/"):
                raise UnsafeArchiveError(f"{m.name!r} links to the absolute path {target!r}")
            joined = posixpath.join(posixpath.dirname(name), target)
            _relative(posixpath.normpath(joined), m.name)
            parts = joined.split("/")
            for i in range(1, len(parts) + 1):  # each step of the way, before ".." is applied
                if posixpath.normpath("/".join(parts[:i])) in links:
                    raise UnsafeArchiveError(f"{m.name!r} links through another link")
            links.add(name)
        elif m.islnk():
            target = _relative(m.linkname, m.name)
            if target not in names:
                raise UnsafeArchiveError(
                    f"{m.name!r} is a hard link to {m.linkname!r}, "
                    "which is not a file of the archive"
                )
        elif not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"{m.name!r} is a device, FIFO or other special file")
        names.add(name)


def _relative(path: str, member: str) -> str:
    """``path`` normalised, or UnsafeArchiveError when it is absolute or climbs out."""
    if path.startswith("/") or os.path.isabs(path):
        raise UnsafeArchiveError(f"{member!r}: absolute path {path!r}")
    if ".." in path.split("/"):
        raise UnsafeArchiveError(f"{member!r}: path {path!r} contains '..'")
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        raise UnsafeArchiveError(f"{member!r}: path {path!r} leaves the folder")
    return norm


def _tamed(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """What the ``data`` filter does to modes and owners, for Pythons without filters."""
    m = copy.copy(member)
    if m.isfile() or m.islnk():
        m.mode = (m.mode & 0o755) | 0o600
    elif m.isdir():
        m.mode = (m.mode & 0o755) | 0o700
    m.uid, m.gid = os.getuid(), os.getgid()
    m.uname = m.gname = ""
    return m
