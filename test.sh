#!/usr/bin/env bash
# Stage 4: the attacks, each against the MISLEADER ensemble and, with identical settings and seed, the bare
# teacher: DFME (data-free), then Knockoff (natural images from each pool in KNOCKOFF_POOLS).
# One row per attack is appended to results/results.csv; a table of this run's rows ends the output.
# Extra flags go to every DFME call (e.g. bash test.sh --amp off); Knockoff's come from KNOCKOFF_ARGS.
#   CONFIG=smoke bash test.sh
set -euo pipefail
cd "$(dirname "$0")"
source configs/load.sh

before=0
[ -f "$RESULTS" ] && before=$(($(wc -l < "$RESULTS") - 1))
declare -A LABELS=([ensemble]=misleader [teacher]=teacher)
for STUDENT in "${STUDENTS[@]}"; do
    for seed in "${SEEDS[@]}"; do
        for victim in ensemble teacher; do
            # shellcheck disable=SC2046
            dfme_attack "${LABELS[$victim]}" "$seed" $(victim_flags "$victim" "$TAG") "$@"
        done
        for pool in "${KNOCKOFF_POOLS[@]}"; do
            for victim in ensemble teacher; do
                # shellcheck disable=SC2046
                knockoff_attack "${LABELS[$victim]}" "$seed" "$pool" $(victim_flags "$victim" "$TAG")
            done
        done
    done
done
python -m misleader.results "$RESULTS" --skip "$before"
