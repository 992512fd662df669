#!/usr/bin/env bash
# Stages 2 and 3: train every defense member of the config against its simulated attacker, then
# build the soft-voting ensemble. Needs the teacher from teacher.sh. With MISINFO_ARCH set in the config,
# also the misinformation model of the adaptive-misinformation API defense (--api_defense).
#   CONFIG=smoke bash train.sh        -> Defense/cache/defense/*.pt, Defense/ensemble/<dataset>[-tag].pt
# Extra flags go to every member's Defense/train_defense.py (its flags: python Defense/train_defense.py --help);
# the variables a config may set, with their defaults: configs/load.sh. RESUME=1 keeps finished members.
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; fi
set -euo pipefail
cd "$(dirname "$0")"
source configs/load.sh

ENSEMBLE_MEMBERS=()
for entry in "${MEMBERS[@]}"; do
    read -r arch lambda T alpha attacker <<< "$entry"
    attacker="${attacker:-$arch}"
    echo "== member $arch: lambda $lambda, T $T, alpha $alpha, surrogate $attacker"
    train_member "$arch" "$lambda" "$T" "$alpha" "$attacker" "$TAG" "$SEED" "$@"
    ENSEMBLE_MEMBERS+=("$arch${TAG:+:$TAG}")
done

echo "== ensemble"
build_ensemble "$TAG" "${ENSEMBLE_MEMBERS[@]}"

if [ -n "$MISINFO_ARCH" ]; then
    echo "== misinformation model $MISINFO_ARCH"
    train_misinfo "$MISINFO_ARCH" "$TAG" "$SEED"
fi
