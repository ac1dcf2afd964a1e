"""scripts/gpu_check.sh in its smoke mode: every section, tiny, on the CPU, into one report.

The GPU run itself needs a GPU; this checks that the script runs end to end and writes every
section, so the prepared check does not first fail on the machine it was prepared for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from gpu_check_sections import SECTIONS, TITLES, sizes  # noqa: E402


def test_the_gpu_run_fits_in_eight_minutes():
    real = sizes(smoke=False)
    assert sum(real.budgets.values()) <= 470 and set(real.budgets) == set(SECTIONS)
    assert (real.tp_image, real.tp_batch, real.accelerator) == (224, 256, "gpu")
    text = (ROOT / "scripts" / "gpu_check.sh").read_text()
    assert 'GPU_CHECK_LIMIT_S:-480' in text  # the outer limit: 8 minutes


@pytest.mark.slow
def test_smoke_mode_writes_every_section(tmp_path):
    out = tmp_path / "report.md"
    env = {**os.environ, "TRANSFERLAB_ROOT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--smoke", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = out.read_text()
    assert "**Smoke mode**" in report
    for name in SECTIONS:
        assert f"## {TITLES[name]}" in report, name
        assert f"| {TITLES[name]} | ok |" in report, name
    for variant in ("| fp32 |", "| bf16 |", "| bf16 + channels_last |", "| bf16 + channels_last + torch.compile |"):
        assert variant in report
    assert "0 overlapping holds, 3 of 3 completed" in report
    assert "test accuracy" in report and "| record status | completed |" in report
