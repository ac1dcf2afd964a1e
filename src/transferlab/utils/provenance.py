"""What a reproduction needs to know about where a run ran: the code's commit, the library
versions, the lock file the environment was installed from, and the machine. Recorded in every
metrics.json (record.py)."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# The distributions whose versions change results; optional ones are recorded only when installed.
_CORE = ("torch", "torchvision", "timm", "lightning", "torchmetrics", "hydra-core", "numpy")
_OPTIONAL = ("transformers", "peft", "onnx", "onnxruntime", "litdata")


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# What decides what a run computes; edits to docs or tests elsewhere in the checkout do not.
CODE_PATHS = ("src", "configs", "scripts", "train.py", "eval.py", "pyproject.toml")


@functools.lru_cache(maxsize=None)
def code_state(repo: str) -> dict:
    """{"commit": sha or None, "dirty": bool or None}: None where `repo` is not a git checkout.

    Cached per process: the first call (train.py makes it as a run starts) describes the code a
    sweep's process imported, even if the checkout changes while the sweep runs."""
    commit = _git(Path(repo), "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    # Untracked files (logs, caches) do not change the code that ran; edits to tracked code do.
    status = _git(Path(repo), "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in (*_CORE, *_OPTIONAL):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name in _CORE:
                found[name] = "not installed"
    return found


# `make install` installs exactly this file (pip-compile's output; `make lock` refreshes it).
LOCK_FILE = "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def lock_pins(text: str) -> dict[str, str]:
    """{distribution: version} for every `name==version` line of a lock file."""
    return {m.group(1): m.group(2) for m in map(_PIN.match, text.splitlines()) if m}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=None)
def environment(repo: str) -> dict:
    """{"lock": "sha256:<digest of the lock file>" or None, "lock_differs": {name: installed}}.

    `lock_differs` names every locked distribution installed at another version ("missing" where
    absent), so a record tells a locked environment from one that drifted after install. Cached per
    process like `code_state`: a sweep's jobs describe the environment their process imported."""
    path = Path(repo) / LOCK_FILE
    try:
        text = path.read_text()
    except OSError:
        return {"lock": None, "lock_differs": {}}
    installed = {_normal(d.metadata["Name"] or ""): d.version for d in metadata.distributions()}
    differs = {}
    for name, pinned in lock_pins(text).items():
        version = installed.get(_normal(name), "missing")
        if version != pinned:
            differs[name] = version
    return {"lock": "sha256:" + hashlib.sha256(text.encode()).hexdigest(), "lock_differs": differs}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    info = {
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def provenance(repo: str | Path) -> dict:
    root = str(Path(repo).resolve())
    return {"code": code_state(root), "versions": versions(), "environment": environment(root), "machine": machine()}
