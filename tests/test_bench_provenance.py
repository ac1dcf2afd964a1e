"""Every benchmark document starts with where its numbers come from: the command, the date, the
machine, the commit and whether the tree was clean, the lock the environment was installed from."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402
from transferlab.utils.provenance import LOCK_FILE  # noqa: E402


def test_the_provenance_table_names_command_commit_lock_and_machine():
    info = bench.machine_info(2, "python scripts/bench.py --steps 3 ")
    assert info["command"] == "`python scripts/bench.py --steps 3`"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if head:  # a source tarball has no git: the commit says unknown then
        assert info["transferlab commit"].split()[0] == head
    digest = hashlib.sha256((ROOT / LOCK_FILE).read_text().encode()).hexdigest()
    assert info["lock"].startswith(f"sha256:{digest} (installed packages that differ from it: ")
    assert {"date", "machine", "gpu", "torch", "torch threads"} <= set(info)


def test_every_benchmark_script_writes_the_provenance_table():
    for script in ("bench.py", "bench_export.py", "bench_storage.py", "bench_text.py"):
        assert "machine_info(" in (ROOT / "scripts" / script).read_text(), script
