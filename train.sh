#!/usr/bin/env bash
# Stages 2 and 3: train every defense member of the config against its simulated attacker, then
# build the soft-voting ensemble. Needs the teacher from teacher.sh.
#   CONFIG=smoke bash train.sh        -> Defense/cache/defense/*.pt, Defense/ensemble/<dataset>[-tag].pt
set -euo pipefail
cd "$(dirname "$0")"
source configs/load.sh

ENSEMBLE_MEMBERS=()
for entry in "${MEMBERS[@]}"; do
    read -r arch lambda T alpha attacker <<< "$entry"
    attacker="${attacker:-$arch}"
    echo "== member $arch: lambda $lambda, T $T, alpha $alpha, surrogate $attacker"
    python Defense/train_defense.py "${COMMON[@]}" "${TAGARG[@]}" --resume "$RESUME" --teacher_model "$TEACHER_MODEL" \
        --defense_model "$arch" --attacker_model "$attacker" --lambda_ "$lambda" --T "$T" --alpha "$alpha" \
        --epochs "$DEFENSE_EPOCHS" --batch_size "$DEFENSE_BATCH" --lr_defense "$LR_DEFENSE" \
        --lr_attacker "$LR_ATTACKER" --a_iter "$A_ITER" "${DEFENSE_ARGS[@]}" "$@"
    ENSEMBLE_MEMBERS+=("$arch${TAG:+:$TAG}")
done

echo "== ensemble"
python Defense/ensemble.py "${COMMON[@]}" "${TAGARG[@]}" --teacher_model "$TEACHER_MODEL" \
    --members "${ENSEMBLE_MEMBERS[@]}"
