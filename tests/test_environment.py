"""The locked environment: every record names the lock file's digest and any locked package that
is installed at another version; the report marks groups whose runs ran elsewhere."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import pandas as pd
from test_report import _job, _metrics

from transferlab.cli import main
from transferlab.report.collect import env_label
from transferlab.utils.provenance import LOCK_FILE, environment, lock_pins, provenance

ROOT = Path(__file__).resolve().parents[1]


def test_lock_pins_read_every_pinned_line_and_nothing_else():
    text = "# header\nnumpy==2.4.6\n    # via torch\nPyYAML==6.0.4 ; python_version >= '3'\n-e .\nfoo>=1\n"
    assert lock_pins(text) == {"numpy": "2.4.6", "PyYAML": "6.0.4"}


def test_environment_names_the_digest_and_what_drifted(tmp_path):
    numpy = metadata.version("numpy")
    text = f"numpy=={numpy}\nPyYAML==0.0.1\nno-such-distribution-here==1.0\n"
    (tmp_path / LOCK_FILE).write_text(text)
    env = environment(str(tmp_path))
    assert env["lock"] == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    # PyYAML is installed under another version; the made-up name is not installed at all.
    assert env["lock_differs"] == {"PyYAML": metadata.version("pyyaml"), "no-such-distribution-here": "missing"}
    assert environment(str(tmp_path / "nowhere")) == {"lock": None, "lock_differs": {}}


def test_the_record_of_this_checkout_carries_its_lock():
    env = provenance(ROOT)["environment"]
    assert env["lock"] == "sha256:" + hashlib.sha256((ROOT / LOCK_FILE).read_bytes()).hexdigest()
    # Installed by `make install`, the lock's torch is the Makefile's pin.
    assert lock_pins((ROOT / LOCK_FILE).read_text())["torch"] in (ROOT / "Makefile").read_text()


def test_env_labels():
    assert env_label(None) == "unknown"
    assert env_label({"environment": {"lock": None}}) == "unlocked"
    assert env_label({"environment": {"lock": "sha256:" + "ab" * 32, "lock_differs": {}}}) == "ab" * 6
    assert env_label({"environment": {"lock": "sha256:" + "ab" * 32, "lock_differs": {"x": "1"}}}) == "ab" * 6 + "+drift"


def _with_env(m: dict, lock: str, differs: dict | None = None) -> dict:
    m["provenance"]["environment"] = {"lock": "sha256:" + lock * 64, "lock_differs": differs or {}}
    return m


def test_report_marks_groups_with_a_run_from_another_environment(tmp_path):
    sweep = tmp_path / "sweep"
    jobs = [("extract", 1, "a", None), ("extract", 2, "a", None), ("full", 1, "a", None), ("full", 2, "b", None),
            ("partial", 1, "a", {"numpy": "1.0"}), ("partial", 2, "a", None)]
    for num, (strategy, seed, lock, differs) in enumerate(jobs):
        _job(sweep, num, [f"strategy={strategy}", f"seed={seed}"],
             _with_env(_metrics("lite0", strategy, 10, seed, commit="c" * 40), lock, differs))
    out = tmp_path / "out"
    assert main(["report", str(sweep), "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    assert ("Environments differ: `aaaaaaaaaaaa` (4 runs), `aaaaaaaaaaaa+drift` (1 run), `bbbbbbbbbbbb` (1 run);"
            " † marks a group with runs outside `aaaaaaaaaaaa`.") in md
    rows = {line.split(" | ")[3].replace("*", ""): line for line in md.splitlines() if line.startswith("| lite0 |")}
    assert set(rows) == {"extract", "full†", "partial†"}
    df = pd.read_csv(out / "results.csv").set_index("job")
    assert df["env"].to_dict() == {0: "a" * 12, 1: "a" * 12, 2: "a" * 12, 3: "b" * 12, 4: "a" * 12 + "+drift", 5: "a" * 12}


def test_one_environment_is_said_once_and_marks_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    for num, seed in enumerate((1, 2)):
        _job(sweep, num, ["strategy=full", f"seed={seed}"], _with_env(_metrics("lite0", "full", 10, seed, commit="c" * 40), "d"))
    assert main(["report", str(sweep), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "results.md").read_text()
    assert "Environment: lock `dddddddddddd` (all 2 runs)." in md and "†" not in md
