import os
import stat
from contextlib import contextmanager

import pytest

from transferlab.utils.io import atomic_write, atomic_write_bytes, atomic_write_json


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def plain_open_mode(path) -> int:
    with open(path, "w") as f:
        f.write("x")
    return mode(path)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664)], ids=["umask022", "umask002"])
def test_written_files_get_the_mode_plain_open_gives(tmp_path, mask, expected):
    # A teammate reads and reports these runs: metrics.json and caches must not be private (0600).
    with umask(mask):
        written = [
            atomic_write_json(tmp_path / "metrics.json", {"acc": 1.0}),
            atomic_write_bytes(tmp_path / "cache" / "blob.bin", b"\x00\x01"),
            atomic_write(tmp_path / "other.pt", lambda f: f.write(b"data")),
        ]
        reference = plain_open_mode(tmp_path / "plain.txt")
    assert reference == expected
    assert [mode(p) for p in written] == [expected] * 3


def test_rewriting_a_private_file_makes_it_readable(tmp_path):
    # Files written by the old writer are 0600; the next write of the same file fixes them.
    path = tmp_path / "metrics.json"
    path.write_text("{}")
    path.chmod(0o600)
    with umask(0o022):
        atomic_write_json(path, {"status": "completed"})
    assert mode(path) == 0o644 and '"completed"' in path.read_text()


def test_umask_is_read_at_each_write(tmp_path):
    with umask(0o077):
        private = atomic_write_bytes(tmp_path / "a", b"a")
    with umask(0o022):
        shared = atomic_write_bytes(tmp_path / "b", b"b")
    assert (mode(private), mode(shared)) == (0o600, 0o644)


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = atomic_write_bytes(tmp_path / "metrics.json", b"old")

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError, match="disk went away"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
