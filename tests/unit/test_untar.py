"""Safe unpacking of pulled archives, identical on every supported Python."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from hsm.sources.transport import unpack
from hsm.sources.untar import UnsafeArchiveError


def _archive(*members: tuple[str, str, str]) -> io.BytesIO:
    """Members as (kind, name, data-or-link-target); kind is file, dir, sym, lnk, fifo, chr."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for kind, name, extra in members:
            info = tarfile.TarInfo(name)
            data = b""
            if kind == "file":
                data = extra.encode()
                info.size = len(data)
                info.mode = 0o4777  # set-user-id and world-writable: must be cleared
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == "lnk":
                info.type, info.linkname = tarfile.LNKTYPE, extra
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info, io.BytesIO(data) if data else None)
    buffer.seek(0)
    return buffer


def test_plain_results_and_inside_links_are_unpacked(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    unpack(
        _archive(
            ("dir", "t1", ""),
            ("file", "t1/result.json", "{}"),
            ("sym", "t1/latest", "result.json"),
            ("lnk", "t1/copy", "t1/result.json"),
            ("dir", "t1/sub", ""),
            ("sym", "t1/sub/up", "../result.json"),
        ),
        dest,
    )
    assert (dest / "t1/result.json").read_text() == "{}"
    assert (dest / "t1/latest").resolve() == (dest / "t1/result.json").resolve()
    assert (dest / "t1/copy").read_text() == "{}"
    assert (dest / "t1/sub/up").read_text() == "{}"
    mode = (dest / "t1/result.json").stat().st_mode
    assert not mode & 0o4000 and not mode & 0o022


@pytest.mark.parametrize(
    "members",
    [
        [("file", "/etc/evil", "x")],
        [("file", "../evil", "x")],
        [("file", "t1/../../evil", "x")],
        [("sym", "t1", "/etc")],
        [("sym", "t1", "../..")],
        [("sym", "t1", "."), ("sym", "t2", "t1/..")],
        [("sym", "t1", "sub"), ("file", "t1/x", "x")],
        [("lnk", "t1", "/etc/passwd")],
        [("lnk", "t1", "../outside")],
        [("lnk", "t1", "not-in-archive")],
        [("fifo", "t1", "")],
        [("chr", "t1", "")],
    ],
    ids=[
        "absolute",
        "dotdot",
        "inner-dotdot",
        "sym-absolute",
        "sym-up",
        "sym-chain",
        "below-sym",
        "hard-absolute",
        "hard-up",
        "hard-foreign",
        "fifo",
        "device",
    ],
)
def test_hostile_archives_are_refused_before_anything_is_written(
    tmp_path: Path, members: list[tuple[str, str, str]]
) -> None:
    dest = tmp_path / "out"
    archive = _archive(("file", "ok.txt", "fine"), *members)
    with pytest.raises(UnsafeArchiveError):
        unpack(archive, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil").exists()
