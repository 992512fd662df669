#!/usr/bin/env bash
# Stage 4: the attacks, each against the MISLEADER ensemble and, with identical settings and seed, the bare
# teacher: DFME (data-free), then Knockoff (natural images from each pool in KNOCKOFF_POOLS).
# One row per attack goes to results/results.csv (a rerun replaces its run's earlier row); a table of this
# invocation's rows ends the output.
# Extra flags go to every DFME call (e.g. bash test.sh --amp off); Knockoff's come from KNOCKOFF_ARGS.
#   CONFIG=smoke bash test.sh
# The variables a config may set, with their defaults: configs/load.sh. RESUME=1 skips finished runs.
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; fi
set -euo pipefail
cd "$(dirname "$0")"
source configs/load.sh

mkdir -p DFME/cache  # the table at the end: rows of the clones written after this file (beside them: one clock)
started=$(mktemp -p DFME/cache .test-sh-started.XXXXXX)
trap 'rm -f "$started"' EXIT
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
python -m misleader.results "$RESULTS" --since "$started"
