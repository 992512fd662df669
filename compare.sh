#!/usr/bin/env bash
# The comparison behind the results table: the same DFME settings and seeds against
#   the bare teacher and the MISLEADER ensemble (COMPARE_SEEDS each), each member alone,
#   the ensemble of the same members trained with lambda = 0 (distillation only),
#   a homogeneous ensemble (three members of one architecture, same data split, initialisation seeds 1-3),
#   and the MISLEADER ensemble attacked with --probs_as_logits (the earlier evaluation's handicap).
# Needs teacher.sh and train.sh first. Finished runs are skipped (RESUME=1 semantics), so it can be
# rerun after an interruption. Ends with report.sh for this config.
#   CONFIG=smoke bash compare.sh
set -euo pipefail
cd "$(dirname "$0")"
source configs/load.sh
RESUME=1

variant_tag() { if [ -n "$TAG" ]; then echo "$TAG-$1"; else echo "$1"; fi; }

# 1. the variants' members
LAM0=$(variant_tag lam0)
LAM0_MEMBERS=()
for entry in "${MEMBERS[@]}"; do
    read -r arch lambda T alpha attacker <<< "$entry"
    echo "== lambda = 0 member $arch"
    train_member "$arch" 0 "$T" "$alpha" "${attacker:-$arch}" "$LAM0" "$SEED"
    LAM0_MEMBERS+=("$arch:$LAM0")
done
build_ensemble "$LAM0" "${LAM0_MEMBERS[@]}"

read -r harch hlambda hT halpha hattacker <<< "${MEMBERS[0]}"
HOMO_MEMBERS=()
for i in 1 2 3; do
    echo "== homogeneous member $i: $harch"
    train_member "$harch" "$hlambda" "$hT" "$halpha" "${hattacker:-$harch}" "$(variant_tag homo$i)" "$((SEED + i))"
    HOMO_MEMBERS+=("$harch:$(variant_tag homo$i)")
done
build_ensemble "$(variant_tag homo)" "${HOMO_MEMBERS[@]}"

# 2. the attacks
# shellcheck disable=SC2046
for seed in "${COMPARE_SEEDS[@]}"; do
    dfme_attack teacher "$seed" $(victim_flags teacher)
    dfme_attack misleader "$seed" $(victim_flags ensemble "$TAG")
done
seed="${COMPARE_SEEDS[0]}"
for entry in "${MEMBERS[@]}"; do
    read -r arch _ <<< "$entry"
    dfme_attack "member-$arch" "$seed" --victim "Defense/cache/defense/$DATASET-$arch${TAG:+-$TAG}.pt"
done
dfme_attack lambda0 "$seed" $(victim_flags ensemble "$LAM0")
dfme_attack homogeneous "$seed" $(victim_flags ensemble "$(variant_tag homo)")
dfme_attack misleader "$seed" $(victim_flags ensemble "$TAG") --probs_as_logits 1 --tag "${ATTACK_TAG:+$ATTACK_TAG-}pal"

bash report.sh --config "$CONFIG"
