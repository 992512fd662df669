#!/usr/bin/env bash
# Stage 4: DFME against the ensemble and, with identical settings and seed, against the bare teacher.
# One row per attack is appended to results/results.csv; a table of this run's rows ends the output.
#   CONFIG=smoke bash test.sh
set -euo pipefail
cd "$(dirname "$0")"
source configs/load.sh

RESULTS=results/results.csv
before=0
[ -f "$RESULTS" ] && before=$(($(wc -l < "$RESULTS") - 1))
TEACHER_TAG=()
[ -n "$TAG" ] && TEACHER_TAG=(--teacher_tag "$TAG" --ensemble_tag "$TAG")
declare -A LABELS=([ensemble]=misleader [teacher]=teacher)
for student in "${STUDENTS[@]}"; do
    for seed in "${SEEDS[@]}"; do
        for victim in ensemble teacher; do
            echo "== DFME: $student against the $victim, seed $seed"
            python DFME/dfme.py --dataset "$DATASET" --device "$DEVICE" --progress "$PROGRESS" --resume "$RESUME" \
                ${VAL_SIZE:+--val_size "$VAL_SIZE"} "${ATTACK_TAGARG[@]}" "${TEACHER_TAG[@]}" --seed "$seed" \
                --victim "$victim" --label "${LABELS[$victim]}" --teacher_model "$TEACHER_MODEL" --student_model "$student" \
                --query_budget "$QUERY_BUDGET" --batch_size "$DFME_BATCH" --config "$CONFIG" \
                --results "$RESULTS" "${DFME_ARGS[@]}" "$@"
        done
    done
done
python -m misleader.results "$RESULTS" --skip "$before"
