#!/usr/bin/env bash
# DNAGPT-H vs DNAGPT-M at toy scale on CPU (experiment/cross_species_gsr.yaml documents each step):
# pre-train the tiny preset on the human part of the bundled corpus and on the whole bundled corpus, fine-tune both on
# GSR (PAS subset), evaluate both, print per-species results side by side.
#   scripts/cross_species_gsr.sh [OUT_DIR] [PRETRAIN_STEPS] [FINETUNE_STEPS]
# Short budgets make this a smoke run of the comparison, not a result: read the numbers next to the 6-mer baseline.
set -euo pipefail
OUT=${1:-runs/cross_species_gsr}
PRE_STEPS=${2:-300}
FT_STEPS=${3:-300}
PY=${PYTHON:-python}
COMMON=(trainer=cpu trainer.enable_progress_bar=false extras.print_config=false)

for side in h m; do
  corpus=$([ "$side" = h ] && echo bundled_human || echo bundled)
  "$PY" train.py corpus="$corpus" trainer.max_steps="$PRE_STEPS" test=false "${COMMON[@]}" hydra.run.dir="$OUT/pre_$side"
  "$PY" train.py experiment=cross_species_gsr init_from="$OUT/pre_$side/checkpoints/last.ckpt" \
    trainer.max_epochs=-1 trainer.max_steps="$FT_STEPS" trainer.val_check_interval="$FT_STEPS" test=false \
    "${COMMON[@]}" hydra.run.dir="$OUT/ft_$side"
  "$PY" evaluate.py task=gsr ckpt_path="$OUT/ft_$side/checkpoints/last.ckpt" "${COMMON[@]}" hydra.run.dir="$OUT/ev_$side"
done

"$PY" - "$OUT" <<'PYEOF'
import csv, sys
from pathlib import Path

out = Path(sys.argv[1])
tables = {side: {r["group"]: r for r in csv.DictReader(open(out / f"ev_{side}" / "gsr_metrics.csv"))} for side in "hm"}
print(f"{'group':<16}{'H acc':>7}{'H mcc':>7}{'M acc':>7}{'M mcc':>7}{'6-mer acc':>10}{'mcc':>7}")
for group, h in tables["h"].items():
    if "_motif_" in group:
        continue
    m = tables["m"][group]
    print(f"{group:<16}{float(h['model_acc']):>7.3f}{float(h['model_mcc']):>7.3f}{float(m['model_acc']):>7.3f}"
          f"{float(m['model_mcc']):>7.3f}{float(h['baseline_acc']):>10.3f}{float(h['baseline_mcc']):>7.3f}")
PYEOF
