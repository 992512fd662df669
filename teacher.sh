#!/usr/bin/env bash
# Stage 1: train the teacher. Settings live in configs/${CONFIG:-quick}.sh.
#   CONFIG=smoke bash teacher.sh      -> Defense/cache/teacher/<dataset>-<arch>[-tag].pt
# Extra flags go to Defense/train_teacher.py (its flags: python Defense/train_teacher.py --help); the variables
# a config may set, with their defaults: configs/load.sh. With RESUME=1 an interrupted run continues.
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; fi
set -euo pipefail
cd "$(dirname "$0")"
source configs/load.sh

python Defense/train_teacher.py "${COMMON[@]}" "${TAGARG[@]}" --resume "$RESUME" \
    --model "$TEACHER_MODEL" --epochs "$TEACHER_EPOCHS" --batch_size "$TEACHER_BATCH" "${TEACHER_ARGS[@]}" "$@"
