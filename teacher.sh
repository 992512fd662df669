#!/usr/bin/env bash
# Stage 1: train the teacher. Settings live in configs/${CONFIG:-quick}.sh.
#   CONFIG=smoke bash teacher.sh      -> Defense/cache/teacher/<dataset>-<arch>[-tag].pt
set -euo pipefail
cd "$(dirname "$0")"
source configs/load.sh

python Defense/train_teacher.py "${COMMON[@]}" "${TAGARG[@]}" --resume "$RESUME" \
    --model "$TEACHER_MODEL" --epochs "$TEACHER_EPOCHS" --batch_size "$TEACHER_BATCH" "${TEACHER_ARGS[@]}" "$@"
