"""The device pool: exclusive holds, no idle device while a job waits, crash-safe release."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from transferlab.sweep import pool_callback
from transferlab.sweep.device_pool import DevicePool, visible_devices
from transferlab.sweep.pool_audit import read_records
from transferlab.sweep.pool_callback import DevicePoolCallback
from transferlab.utils.devices import ENV_DEVICES, ENV_POOL_ERROR, held_devices

REPO = Path(__file__).resolve().parents[1]
POLL_S = 0.05
# Time a free device may sit idle while some job waits: one poll, process wake-up and the
# write of the records line, with room for a loaded 2-core CI box.
IDLE_TOLERANCE_S = 0.3


def _job(pool_dir: str, ids: list[str], name: str, hold_s: float, start) -> None:
    pool = DevicePool(pool_dir, ids, poll_s=POLL_S)
    start.wait()  # all jobs ask at once, so most of them must queue
    pool.acquire(1, job=name)
    time.sleep(hold_s)
    pool.release()


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def test_jobs_of_unequal_length_and_a_killed_job(tmp_path: Path) -> None:
    pool_dir = str(tmp_path / "pool")
    ids = ["gpuA", "gpuB"]
    holds = {"short0": 0.2, "long0": 1.5, "short1": 0.2, "long1": 1.5, "short2": 0.2, "victim": 60.0}
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(len(holds) + 1)
    procs = {
        name: ctx.Process(target=_job, args=(pool_dir, ids, name, hold, start), name=name)
        for name, hold in holds.items()
    }
    try:
        for p in procs.values():
            p.start()
        start.wait(timeout=30)
        _wait_for(
            lambda: any(r["job"] == "victim" for r in read_records(pool_dir)), 20, "victim to hold"
        )
        time.sleep(0.3)
        t_kill = time.time()
        os.kill(procs["victim"].pid, signal.SIGKILL)
        procs["victim"].join(5)
        for name, p in procs.items():
            p.join(20)
            assert not p.is_alive(), f"{name} never finished"
    finally:
        for p in procs.values():
            if p.is_alive():
                p.kill()
    assert procs["victim"].exitcode == -signal.SIGKILL
    assert all(p.exitcode == 0 for n, p in procs.items() if n != "victim")

    # The killed job's device comes back: both devices can be taken at once, right away.
    auditor = DevicePool(pool_dir, ids, poll_s=POLL_S)
    assert sorted(auditor.acquire(2, timeout_s=2.0, job="auditor")) == ids
    auditor.release()

    records = {r["job"]: r for r in read_records(pool_dir)}
    assert set(records) == set(holds) | {"auditor"}
    victim = records["victim"]
    assert victim["released_at"] is None and victim["status"] == "reclaimed"
    assert victim["reclaimed_at"] >= t_kill
    assert all(records[n]["status"] == "released" for n in holds if n != "victim")

    # Hold intervals. The victim's lock cannot be free before the kill, so t_kill is a safe
    # end for the exclusivity check.
    jobs = [r for n, r in records.items() if n != "auditor"]
    spans = {
        r["job"]: (r["acquired_at"], r["released_at"] if r["released_at"] is not None else t_kill)
        for r in jobs
    }
    for r in jobs:
        assert len(r["ids"]) == 1 and r["ids"][0] in ids
        a0, a1 = spans[r["job"]]
        assert a1 - a0 >= holds[r["job"]] - 0.01 or r["job"] == "victim"

    # 1. No two jobs that overlap in time held the same device.
    for i, r in enumerate(jobs):
        for s in jobs[i + 1:]:
            if set(r["ids"]) & set(s["ids"]):
                assert _overlap(*spans[r["job"]], *spans[s["job"]]) == 0, (r["job"], s["job"])

    # 2. No job waited while a device sat idle (beyond the tolerance).
    for d in ids:
        busy = sorted(spans[r["job"]] for r in jobs if d in r["ids"])
        idle = [(float("-inf"), busy[0][0])]
        idle += [(busy[k][1], busy[k + 1][0]) for k in range(len(busy) - 1)]
        idle.append((busy[-1][1], float("inf")))
        for r in jobs:
            w0, w1 = r["requested_at"], r["acquired_at"]
            idle_while_waiting = sum(_overlap(w0, w1, i0, i1) for i0, i1 in idle)
            assert idle_while_waiting <= IDLE_TOLERANCE_S, (
                f"{r['job']} waited {idle_while_waiting:.3f}s while {d} was idle"
            )
    # The pool really was contended (4 of 6 jobs had to queue behind a 0.2 s job at least),
    # so the checks above tested something.
    waits = sorted(r["acquired_at"] - r["requested_at"] for r in jobs)
    assert waits[2] > 0.15, waits


def test_timeout_names_the_holder(tmp_path: Path) -> None:
    holder = DevicePool(tmp_path, [0, 1])
    assert holder.acquire(2, job="busy-job") == ["0", "1"]
    other = DevicePool(tmp_path, [0, 1], poll_s=0.02)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"waited 0.2s for 1 free device.*busy-job"):
        other.acquire(1, timeout_s=0.2, job="late")
    assert time.monotonic() - t0 < 1.0
    holder.release()
    assert other.acquire(1) == ["0"] == other.held
    other.release()
    assert other.held == []
    # A timed-out wait leaves no record behind; the two acquisitions do.
    assert [r["job"] for r in read_records(tmp_path)] == ["busy-job", f"pid{os.getpid()}"]


def test_waiting_for_two_does_not_sit_on_one(tmp_path: Path) -> None:
    first = DevicePool(tmp_path, ["a", "b"], poll_s=0.02)
    first.acquire(1)
    wants_two = DevicePool(tmp_path, ["a", "b"], poll_s=0.02)
    waiter = threading.Thread(target=lambda: wants_two.acquire(2, timeout_s=5))
    waiter.start()
    try:
        time.sleep(0.1)
        # "b" is free and must stay takeable while the other pool waits for two.
        single = DevicePool(tmp_path, ["a", "b"], poll_s=0.01)
        assert single.acquire(1, timeout_s=1.0) == ["b"]
        single.release()
    finally:
        first.release()
        waiter.join(5)
    assert sorted(wants_two.held) == ["a", "b"]
    wants_two.release()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        DevicePool(tmp_path, [])
    with pytest.raises(ValueError):
        DevicePool(tmp_path, ["0", 0])
    pool = DevicePool(tmp_path, ["0"])
    with pytest.raises(ValueError):
        pool.acquire(2)
    with pytest.raises(ValueError):
        pool.acquire(1, among=["7"])
    pool.acquire(1)
    with pytest.raises(RuntimeError):
        pool.acquire(1)
    pool.release()


def test_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert visible_devices() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,2")  # CUDA stops at the first invalid id
    assert visible_devices() == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_devices(cpu_slots=3) == ["cpu0", "cpu1", "cpu2"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    ids = visible_devices(cpu_slots=2)
    assert ids == ["cpu0", "cpu1"] or all(i.isdigit() for i in ids)


def _isolate_callback_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_callback, "_PROCESS_POOLS", {})
    monkeypatch.setattr(pool_callback, "_BOUND_DEVICES", {})
    # setenv first so that monkeypatch restores what the callback exports.
    for name in (ENV_DEVICES, ENV_POOL_ERROR):
        monkeypatch.setenv(name, "")


def _job_config(num: int, mode: str = "MULTIRUN") -> object:
    return OmegaConf.create(
        {"hydra": {"mode": mode, "job": {"num": num}, "overrides": {"task": [f"seed={num}"]},
                   "runtime": {"output_dir": f"/x/{num}"}}}
    )


def test_callback_in_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    _isolate_callback_state(monkeypatch)
    cb = DevicePoolCallback(pool_dir=str(tmp_path / "pool"), devices=[3, 4], poll_s=0.02)
    outsider = DevicePool(tmp_path / "pool", ["3", "4"], poll_s=0.02)

    cb.on_job_start(_job_config(0, mode="RUN"), task_function=None)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"  # single runs are left alone

    cb.on_job_start(_job_config(0), task_function=None)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" == os.environ[ENV_DEVICES]
    assert held_devices() == ["3"]
    cb.on_job_end(_job_config(0), job_return=None)

    # "3" is free, but this process may already have CUDA set up on it: it must stay on "3"
    # even when "4" is free too, and wait for "3" if someone else has it.
    outsider.acquire(1, among=["3"])
    threading.Timer(0.2, outsider.release).start()
    t0 = time.monotonic()
    cb.on_job_start(_job_config(1), task_function=None)
    assert time.monotonic() - t0 >= 0.15
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"

    # A job that ended without on_job_end (BaseException in the task) does not leak its hold.
    cb.on_job_start(_job_config(2), task_function=None)
    cb.on_job_end(_job_config(2), job_return=None)
    recs = read_records(tmp_path / "pool")
    assert [(r["job"], r["ids"], r["status"]) for r in recs if r["job"].startswith("job")] == [
        ("job0", ["3"], "released"), ("job1", ["3"], "released"), ("job2", ["3"], "released")
    ]
    assert recs[0]["overrides"] == ["seed=0"] and recs[0]["job_dir"] == "/x/0"


def test_callback_timeout_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    _isolate_callback_state(monkeypatch)
    cb = DevicePoolCallback(pool_dir=str(tmp_path), devices="0", timeout_s=0.1, poll_s=0.02)
    busy = DevicePool(tmp_path, ["0"])
    busy.acquire(1)
    with pytest.raises(TimeoutError):
        cb.on_job_start(_job_config(0), task_function=None)
    # Hydra downgrades callback errors to warnings and runs the job anyway: it must then see
    # no GPU rather than one that another job holds.
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert "TimeoutError" in os.environ[ENV_POOL_ERROR] and held_devices() == []
    busy.release()


def test_pool_n_jobs_resolver() -> None:
    cfg = OmegaConf.create(
        {"cb": {"devices": [0, 1, 2, 3, 4], "devices_per_job": 2}, "n": "${transferlab.pool_jobs:${cb}}"}
    )
    assert cfg.n == 2


APP = """
import json, os, time
import hydra

@hydra.main(config_path="conf", config_name="app", version_base="1.3")
def main(cfg):
    t0 = time.time()
    time.sleep(cfg.sleep)
    rec = {"pid": os.getpid(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "overrides": f"sleep={cfg.sleep} fail={cfg.fail}", "start": t0, "end": time.time()}
    with open(os.path.join(cfg.out, f"{os.getpid()}_{t0}.json"), "w") as f:
        json.dump(rec, f)
    if cfg.fail:
        raise RuntimeError("task failed on purpose")

if __name__ == "__main__":
    main()
"""

APP_CONFIG = """
defaults:
  - launcher: parallel
  - _self_
hydra:
  searchpath: [file://{configs}]
  sweep: {{dir: {sweep}}}
  callbacks:
    device_pool:
      devices: ["0", "1"]
      poll_s: 0.05
sleep: 0.1
fail: false
out: {out}
"""


@pytest.mark.slow
def test_parallel_launcher_runs_callbacks_in_workers(tmp_path: Path) -> None:
    """configs/launcher/parallel.yaml end to end with the joblib launcher (about 5 s)."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "out").mkdir()
    sweep = tmp_path / "multirun"
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "conf" / "app.yaml").write_text(
        APP_CONFIG.format(configs=REPO / "configs", sweep=sweep, out=tmp_path / "out")
    )
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    with subprocess.Popen(
        [sys.executable, "app.py", "-m", "sleep=0.1,0.8", "fail=false,true"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:
        launcher_pid = proc.pid
        stdout, stderr = proc.communicate(timeout=120)
    # The sweep reports the failed job at the end, after every job has run.
    assert "task failed on purpose" in stderr, stderr[-3000:]
    assert "n_jobs=2," in stdout + stderr  # sized from the pool by the resolver

    recs = read_records(sweep / ".device_pool")
    tasks = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert len(recs) == len(tasks) == 4
    assert all(r["status"] == "released" for r in recs)
    assert sorted(r["release"]["status"] for r in recs) == ["COMPLETED"] * 2 + ["FAILED"] * 2
    for task in tasks:
        # The task ran inside the hold taken by on_job_start in its own (worker) process,
        # with CUDA_VISIBLE_DEVICES set to the held device.
        (rec,) = [r for r in recs if " ".join(r["overrides"]) == task["overrides"]]
        assert task["pid"] == rec["pid"] != launcher_pid
        assert task["cuda"] == rec["ids"][0]
        assert rec["acquired_at"] <= task["start"] and task["end"] <= rec["released_at"]
    for i, r in enumerate(recs):
        for s in recs[i + 1:]:
            if r["ids"] == s["ids"]:
                assert _overlap(r["acquired_at"], r["released_at"], s["acquired_at"], s["released_at"]) == 0


def test_utils_do_not_import_the_sweep_layer() -> None:
    # Imports run one way: training code reads its devices through utils, never through sweep/.
    code = "import sys, transferlab.utils.resolvers, transferlab.utils.devices; print(sorted(m for m in sys.modules if m.startswith('transferlab.sweep')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
