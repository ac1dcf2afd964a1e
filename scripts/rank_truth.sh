#!/usr/bin/env bash
# The truth for scripts/rank_offline.sh's ranking: fine-tune the candidates with strategy=partial on
# experiment=data_efficiency's recipe (5 epochs) at 100 images per class, seeds 1-3, then Kendall's
# tau of each score against their test accuracy (transferlab rank --table ... --against ...).
# The 128 px candidates are left out of the fine-tuning by default to keep it near an hour on 2 CPU
# cores (SIZES="64,96,128" for all). Writes the runs' records to <table>/finetuned/ and
# agreement.md and agreement.csv beside the table.
set -euo pipefail
cd "$(dirname "$0")/.."
table=${1:-docs/results/ranking}
runs=${RUNS:-logs/rank_truth}
sizes=${SIZES:-64,96}
common=(experiment=data_efficiency strategy=partial data.samples_per_class=100 seed=1,2,3
        launcher=parallel hydra.callbacks.device_pool.cpu_slots=${CPU_SLOTS:-2})
.venv/bin/python train.py -m "${common[@]}" model=efficientnet_lite0 model.weights=none data.image_size=64,96 \
  hydra.sweep.dir="$runs/random"
.venv/bin/python train.py -m "${common[@]}" model=efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 \
  data.image_size="$sizes" hydra.sweep.dir="$runs/pretrained"
# The records go beside the table (no machine paths; refused from uncommitted code), and tau is
# computed from those copies, so agreement.md is rebuilt from what is committed.
.venv/bin/python scripts/publish_records.py "$runs/random" "$table/finetuned/random"
.venv/bin/python scripts/publish_records.py "$runs/pretrained" "$table/finetuned/pretrained"
exec .venv/bin/transferlab rank --table "$table" --against "$table/finetuned"
