#!/usr/bin/env bash
# The prepared GPU check: one report (docs/benchmarks_gpu.md) in under 8 minutes on one GPU.
#   scripts/gpu_check.sh                 # on a machine with a GPU
#   scripts/gpu_check.sh --smoke         # every section with tiny sizes on the CPU (checks the script)
#   scripts/gpu_check.sh --help          # sections, sizes, --out
# What each section does and how it is bounded: scripts/gpu_check.py. PYTHON picks the interpreter
# (default: the repository's .venv, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
# The driver keeps every section inside its budget; this outer limit only catches the driver itself
# hanging, and leaves the report as the last finished section wrote it.
LIMIT_S="${GPU_CHECK_LIMIT_S:-480}"
case " $* " in *" --smoke "*) LIMIT_S="${GPU_CHECK_LIMIT_S:-1500}" ;; esac
exec timeout --kill-after=5 "$LIMIT_S" "$PYTHON" scripts/gpu_check.py "$@"
