#!/usr/bin/env bash
# The results report: reads results/results.csv (written by test.sh and compare.sh) and the runs' metrics.csv,
# writes results/report.md (results/CONFIG/report.md with --config CONFIG) and three plots (protection_vs_queries,
# clone_vs_queries, utility_vs_protection).
# Runs no training.
#   bash report.sh [--config quick]     the report, optionally for one config only
#   bash report.sh --verify 1           re-evaluate every saved clone and victim and check the CSV
# Its flags: python -m misleader.report --help.
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; fi
set -euo pipefail
cd "$(dirname "$0")"
# DATA_ROOT (as for the other scripts): the datasets' folder of --verify 1; a --data_root given here wins
[[ -n "${DATA_ROOT:-}" && "$DATA_ROOT" != /* ]] && DATA_ROOT="${OLDPWD:-$PWD}/$DATA_ROOT"
python -m misleader.report ${DATA_ROOT:+--data_root "$DATA_ROOT"} "$@"
