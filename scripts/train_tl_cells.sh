#!/usr/bin/env bash
# Train the shipped tl-cells model from ../shared/data (see src/tlseg/models/tl-cells/README.md).
# Usage: bash scripts/train_tl_cells.sh [OUT_DIR] [extra tlseg train options, e.g. --resume]
# The paired aiSEGcell fields (paired/aisegcell-s10) are laid out as images/ + masks/
# (whole-cell labels) in OUT_DIR/data by symbolic links. Their experiments 210930MA20 and
# 220524DS30, and position p0002 of 181024TK20 (the field of paired/aisegcell), stay out
# of training: benchmarks/count_validation.py and benchmarks/calibration.py count them.
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${1:-runs/tl-cells}
shift || true
S10="$DATA/paired/aisegcell-s10"
VIEW="$OUT-data/aisegcell-s10"
mkdir -p "$VIEW/images" "$VIEW/masks"
for f in "$S10"/tl/*.tif; do
  n=$(basename "$f")
  case "$n" in 181024TK20_p0002_*|210930MA20_*|220524DS30_*) continue ;; esac
  ln -sf "$(realpath "$f")" "$VIEW/images/$n"
  ln -sf "$(realpath "$S10/cell_labels/$n")" "$VIEW/masks/$n"
done
tlseg train "$DATA/tl/usiigaci" "$DATA/tl/bbbc030-cho" "$DATA/tl/ctc-dic-hela" \
  "$DATA/tl/aisegcell-bf" "$VIEW" \
  --incomplete "$DATA/tl/aisegcell-bf" "$VIEW" --exclude '181024TK20_p0002_*' \
  -o "$OUT" --name tl-cells --epochs 40 --flow-weight 2 --crowded 0.3 --border-weight 2 "$@"
