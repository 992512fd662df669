#!/usr/bin/env bash
# The comparison behind the results table: the same DFME settings and seeds against
#   the bare teacher and the MISLEADER ensemble (COMPARE_SEEDS each), each member alone,
#   the ensemble of the same members trained with lambda = 0 (distillation only),
#   a homogeneous ensemble (three members of one architecture, different seeds),
#   and the MISLEADER ensemble attacked with --probs_as_logits (the earlier evaluation's handicap).
# Needs teacher.sh and train.sh first. Finished runs are skipped (RESUME=1 semantics), so it can be
# rerun after an interruption. Ends with report.sh for this config.
#   CONFIG=smoke bash compare.sh
set -euo pipefail
cd "$(dirname "$0")"
source configs/load.sh
RESUME=1

variant_tag() { if [ -n "$TAG" ]; then echo "$TAG-$1"; else echo "$1"; fi; }
train_member() {  # arch lambda T alpha attacker tag seed
    python Defense/train_defense.py "${COMMON[@]}" --seed "$7" --tag "$6" --teacher_tag "$TAG" --resume 1 \
        --teacher_model "$TEACHER_MODEL" --defense_model "$1" --attacker_model "$5" --lambda_ "$2" --T "$3" \
        --alpha "$4" --epochs "$DEFENSE_EPOCHS" --batch_size "$DEFENSE_BATCH" --lr_defense "$LR_DEFENSE" \
        --lr_attacker "$LR_ATTACKER" --a_iter "$A_ITER" "${DEFENSE_ARGS[@]}"
}
attack() {  # label seed victim-args...
    local label="$1" seed="$2"
    shift 2
    echo "== DFME: $label, seed $seed"
    python DFME/dfme.py --dataset "$DATASET" --device "$DEVICE" --progress "$PROGRESS" --resume 1 \
        ${VAL_SIZE:+--val_size "$VAL_SIZE"} "${ATTACK_TAGARG[@]}" --seed "$seed" --label "$label" \
        --teacher_model "$TEACHER_MODEL" --student_model "${STUDENTS[0]}" --query_budget "$QUERY_BUDGET" \
        --batch_size "$DFME_BATCH" --config "$CONFIG" "${DFME_ARGS[@]}" "$@"
}

# 1. the variants' members
LAM0=$(variant_tag lam0)
LAM0_MEMBERS=()
for entry in "${MEMBERS[@]}"; do
    read -r arch lambda T alpha attacker <<< "$entry"
    echo "== lambda = 0 member $arch"
    train_member "$arch" 0 "$T" "$alpha" "${attacker:-$arch}" "$LAM0" "$SEED"
    LAM0_MEMBERS+=("$arch:$LAM0")
done
python Defense/ensemble.py "${COMMON[@]}" --tag "$LAM0" --teacher_tag "$TAG" --teacher_model "$TEACHER_MODEL" \
    --members "${LAM0_MEMBERS[@]}"

read -r harch hlambda hT halpha hattacker <<< "${MEMBERS[0]}"
HOMO_MEMBERS=()
for i in 1 2 3; do
    echo "== homogeneous member $i: $harch"
    train_member "$harch" "$hlambda" "$hT" "$halpha" "${hattacker:-$harch}" "$(variant_tag homo$i)" "$((SEED + i))"
    HOMO_MEMBERS+=("$harch:$(variant_tag homo$i)")
done
python Defense/ensemble.py "${COMMON[@]}" --tag "$(variant_tag homo)" --teacher_tag "$TAG" \
    --teacher_model "$TEACHER_MODEL" --members "${HOMO_MEMBERS[@]}"

# 2. the attacks
for seed in "${COMPARE_SEEDS[@]}"; do
    attack teacher "$seed" --victim teacher ${TAG:+--teacher_tag "$TAG"}
    attack misleader "$seed" --victim ensemble ${TAG:+--ensemble_tag "$TAG"}
done
seed="${COMPARE_SEEDS[0]}"
for entry in "${MEMBERS[@]}"; do
    read -r arch _ <<< "$entry"
    attack "member-$arch" "$seed" --victim "Defense/cache/defense/$DATASET-$arch${TAG:+-$TAG}.pt"
done
attack lambda0 "$seed" --victim ensemble --ensemble_tag "$LAM0"
attack homogeneous "$seed" --victim ensemble --ensemble_tag "$(variant_tag homo)"
attack misleader "$seed" --victim ensemble ${TAG:+--ensemble_tag "$TAG"} --probs_as_logits 1 --tag "${ATTACK_TAG:+$ATTACK_TAG-}pal"

bash report.sh --config "$CONFIG"
