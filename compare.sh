#!/usr/bin/env bash
# The comparison: does the defense protect against each victim's strongest attacker? Victims: the bare teacher,
# the MISLEADER ensemble, the ensemble of the same members trained with lambda = 0 (distillation only) and a
# homogeneous ensemble (three members of one architecture, same data split, initialisation seeds 1-3).
#   1. train  the members of the lambda = 0, homogeneous and MISLEADER_VARIANTS (other lambda or a_iter)
#             ensembles (teacher.sh and train.sh come first); ensembles: build those ensembles (seconds)
#   2. grid   every victim against every DFME_GRID setting (GRID_BUDGET queries, seed GRID_SEED), and Knockoff
#             against every victim (COMPARE_SEEDS x COMPARE_POOLS), its budget curve and label-only answers,
#             and against the API_DEFENSES (every pool, and label-only) and the MISLEADER_VARIANTS
#   3. final  DFME at QUERY_BUDGET with each victim's strongest grid setting (the highest clone accuracy on the
#             validation split, never the test set): paired seeds COMPARE_SEEDS for teacher and MISLEADER,
#             VARIANT_SEEDS for the other two; the API_DEFENSES and MISLEADER_VARIANTS searched at GRID_BUDGET
#             (a variant: MISLEADER's strongest setting and VARIANT_GRID's), FINAL_DEFENSES and FINAL_VARIANTS
#             then at QUERY_BUDGET on the paired seeds with the strongest of their search
# Finished runs are skipped (RESUME=1), so compare.sh can be rerun after an interruption; it ends with report.sh on
# $RESULTS (a --list of all phases or of final ends with that command as a comment).
#   CONFIG=smoke bash compare.sh
#   CONFIG=fashionmnist bash compare.sh --list [train|ensembles|grid|final]
# --list prints the runs (all phases, or one) as self-contained command lines, one per line, and runs nothing:
# run them from the repository root with any job runner, a phase's lines in any order and in parallel, the
# phases in order (train, ensembles, grid, final). Phase 3's lines exist once a victim's grid (or a defense's
# search) is complete: list it again after phase 2. E.g.
#   bash compare.sh --list grid > runs.txt && xargs -d '\n' -P 4 -I{} bash -c {} < runs.txt
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0; fi
set -euo pipefail
cd "$(dirname "$0")"
PHASE=all
if [ "${1:-}" = --list ]; then
    LIST=1
    PHASE="${2:-all}"
    case "$PHASE" in all|train|ensembles|grid|final) ;;
        *) echo "error: --list takes train, ensembles, grid, final or nothing, got '$PHASE'" >&2; exit 2;; esac
elif [ $# -gt 0 ]; then
    echo "error: compare.sh takes no arguments but --list [train|ensembles|grid|final] or --help, got '$1'" >&2
    exit 2
fi
source configs/load.sh
RESUME=1
[ ${#COMPARE_POOLS[@]} -eq 0 ] && COMPARE_POOLS=("${KNOCKOFF_POOLS[@]}")
[ ${#LABEL_SEEDS[@]} -eq 0 ] && LABEL_SEEDS=("${COMPARE_SEEDS[0]}")
variant_tag() { if [ -n "$TAG" ]; then echo "$TAG-$1"; else echo "$1"; fi; }
phase() { [ "$PHASE" = all ] || [ "$PHASE" = "$1" ]; }
LAM0=$(variant_tag lam0)
HOMO=$(variant_tag homo)
declare -A VICTIM=([teacher]="$(victim_flags teacher)" [misleader]="$(victim_flags ensemble "$TAG")"
                   [lambda0]="$(victim_flags ensemble "$LAM0")" [homogeneous]="$(victim_flags ensemble "$HOMO")")
VICTIMS=(teacher misleader lambda0 homogeneous)
KNOBS=()  # the MISLEADER_VARIANTS' victims
for variant in "${MISLEADER_VARIANTS[@]}"; do
    read -r vname _ <<< "$variant"
    VICTIM[misleader-$vname]="$(victim_flags ensemble "$(variant_tag "$vname")")"
    KNOBS+=("misleader-$vname")
done
GRID_TAG="${ATTACK_TAG:+$ATTACK_TAG-}grid"
NAMES=()
for entry in "${DFME_GRID[@]}"; do read -r name _ <<< "$entry"; NAMES+=("$name"); done
distinct() { printf '%s\n' "$@" | awk '!seen[$0]++'; }  # words...: each once, in first-seen order
in_list() {  # word list...: is the word one of the list's
    local w
    for w in "${@:2}"; do [ "$w" = "$1" ] && return 0; done
    return 1
}
for entry in "${AWARE_GRID[@]}"; do
    read -r name _ <<< "$entry"
    ! in_list "$name" "${NAMES[@]}" || { echo "error: AWARE_GRID: '$name' is already a DFME_GRID setting" >&2; exit 2; }
done
grid_entry() {  # the DFME_GRID (or AWARE_GRID) entry of a setting name
    local e n
    for e in "${DFME_GRID[@]}" "${AWARE_GRID[@]}"; do
        read -r n _ <<< "$e"; if [ "$n" = "$1" ]; then echo "$e"; return 0; fi
    done
    return 0
}
DEFENSE_NAMES=()
for d in "${API_DEFENSES[@]}"; do DEFENSE_NAMES+=("${d%%:*}"); done
for entry in "${AWARE_SETTINGS[@]}"; do  # "setting [defense name...]": no name = every defense
    read -r name only <<< "$entry"
    [ -n "$(grid_entry "$name")" ] || { echo "error: AWARE_SETTINGS: '$name' is not a DFME_GRID or AWARE_GRID setting (${NAMES[*]} ${AWARE_GRID[*]%% *})" >&2; exit 2; }
    read -ra only <<< "$only"
    for n in "${only[@]}"; do
        in_list "$n" "${DEFENSE_NAMES[@]}" || { echo "error: AWARE_SETTINGS: '$entry': '$n' names no defense of API_DEFENSES (${DEFENSE_NAMES[*]})" >&2; exit 2; }
    done
done
aware_for() {  # spec: the AWARE_SETTINGS settings that apply to this defense
    local entry name rest n
    local -a only
    for entry in "${AWARE_SETTINGS[@]}"; do
        read -r name rest <<< "$entry"
        read -ra only <<< "$rest"
        if [ ${#only[@]} -eq 0 ]; then echo "$name"; continue; fi
        for n in "${only[@]}"; do if [ "$n" = "${1%%:*}" ]; then echo "$name"; fi; done
    done
    return 0
}
for d in "${FINAL_DEFENSES[@]}"; do
    in_list "$d" "${API_DEFENSES[@]}" || { echo "error: FINAL_DEFENSES: '$d' is not one of API_DEFENSES" >&2; exit 2; }
done
for name in "${VARIANT_GRID[@]}"; do
    in_list "$name" "${NAMES[@]}" || { echo "error: VARIANT_GRID: '$name' is not a DFME_GRID setting (${NAMES[*]})" >&2; exit 2; }
done
for name in "${FINAL_VARIANTS[@]}"; do
    in_list "misleader-$name" "${KNOBS[@]}" ||
        { echo "error: FINAL_VARIANTS: '$name' names no MISLEADER_VARIANTS entry (${KNOBS[*]#misleader-})" >&2; exit 2; }
done
final_variant() { in_list "${1#misleader-}" "${FINAL_VARIANTS[@]}"; }  # label: is it a FINAL_VARIANTS ensemble
FINAL_KNOBS=()  # their victims' labels: they meet Knockoff as MISLEADER does
for name in "${FINAL_VARIANTS[@]}"; do FINAL_KNOBS+=("misleader-$name"); done

# phase 1 in two steps: the members (independent runs), then the ensembles that read them
member() { if phase train; then train_member "$@"; fi; }
ensemble() { if phase ensembles; then build_ensemble "$@"; fi; }
if phase train || phase ensembles; then
    say "phase 1: the lambda = 0, homogeneous and MISLEADER_VARIANTS ensembles"
    LAM0_MEMBERS=()
    for entry in "${MEMBERS[@]}"; do
        read -r arch lambda T alpha attacker <<< "$entry"
        member "$arch" 0 "$T" "$alpha" "${attacker:-$arch}" "$LAM0" "$SEED"
        LAM0_MEMBERS+=("$arch:$LAM0")
    done
    ensemble "$LAM0" "${LAM0_MEMBERS[@]}"
    read -r harch hlambda hT halpha hattacker <<< "${MEMBERS[0]}"
    HOMO_MEMBERS=()
    for i in 1 2 3; do
        member "$harch" "$hlambda" "$hT" "$halpha" "${hattacker:-$harch}" "$(variant_tag homo$i)" "$((SEED + i))"
        HOMO_MEMBERS+=("$harch:$(variant_tag homo$i)")
    done
    ensemble "$HOMO" "${HOMO_MEMBERS[@]}"
    for variant in "${MISLEADER_VARIANTS[@]}"; do
        read -r vname vflags <<< "$variant"
        VARIANT_MEMBERS=()
        for entry in "${MEMBERS[@]}"; do
            read -r arch lambda T alpha attacker <<< "$entry"
            # shellcheck disable=SC2086
            member "$arch" "$lambda" "$T" "$alpha" "${attacker:-$arch}" "$(variant_tag "$vname")" "$SEED" $vflags
            VARIANT_MEMBERS+=("$arch:$(variant_tag "$vname")")
        done
        ensemble "$(variant_tag "$vname")" "${VARIANT_MEMBERS[@]}"
    done
fi

setting_attack() {  # label seed budget tag grid-entry victim-flags...: one DFME or DisGUIDE run of a grid setting
    local label="$1" seed="$2" budget="$3" tag="$4" name entry flags
    read -r name entry flags <<< "$5"
    shift 5
    # shellcheck disable=SC2086
    case "$entry" in
        dfme) QUERY_BUDGET="$budget" dfme_attack "$label" "$seed" "$@" --setting "$name" ${tag:+--tag "$tag"} $flags;;
        disguide) QUERY_BUDGET="$budget" disguide_attack "$label" "$seed" "$@" --setting "$name" ${tag:+--tag "$tag"} $flags;;
        *) echo "error: DFME_GRID entry '$name': entry point must be dfme or disguide, got '$entry'" >&2; exit 2;;
    esac
}

best_attack() {  # label seed budget tag setting victim-flags...: the named grid setting, or without a grid (empty
    # setting) the config's own DFME settings at QUERY_BUDGET
    local label="$1" seed="$2" budget="$3" tag="$4" name="$5"
    shift 5
    if [ -n "$name" ]; then
        setting_attack "$label" "$seed" "$budget" "$tag" "$(grid_entry "$name")" "$@"
    else
        dfme_attack "$label" "$seed" "$@"
    fi
}

if phase grid; then
    say "phase 2: the DFME grid (${#DFME_GRID[@]} settings, ${GRID_BUDGET}M queries, seed $GRID_SEED) and Knockoff"
    for victim in "${VICTIMS[@]}"; do
        for entry in "${DFME_GRID[@]}"; do
            # shellcheck disable=SC2086
            setting_attack "$victim" "$GRID_SEED" "$GRID_BUDGET" "$GRID_TAG" "$entry" ${VICTIM[$victim]}
        done
    done
    for seed in "${COMPARE_SEEDS[@]}"; do
        for pool in "${COMPARE_POOLS[@]}"; do
            for victim in "${VICTIMS[@]}" "${FINAL_KNOBS[@]}"; do
                # shellcheck disable=SC2086
                knockoff_attack "$victim" "$seed" "$pool" ${VICTIM[$victim]}
            done
        done
    done
    for defense in "${API_DEFENSES[@]}"; do
        for victim in teacher misleader; do
            for pool in "${COMPARE_POOLS[@]}"; do
                for seed in "${COMPARE_SEEDS[@]}"; do
                    # shellcheck disable=SC2086
                    knockoff_attack "$victim" "$seed" "$pool" ${VICTIM[$victim]} --api_defense "$defense"
                done
            done
            for seed in "${LABEL_SEEDS[@]}"; do
                # shellcheck disable=SC2086
                knockoff_attack "$victim" "$seed" "${COMPARE_POOLS[0]}" ${VICTIM[$victim]} \
                    --api_defense "$defense" --victim_output label
            done
        done
    done
    for victim in "${KNOBS[@]}"; do
        final_variant "$victim" && continue  # with the victims above
        # shellcheck disable=SC2086
        knockoff_attack "$victim" "$GRID_SEED" "${COMPARE_POOLS[0]}" ${VICTIM[$victim]}
    done
    for victim in teacher misleader "${FINAL_KNOBS[@]}"; do
        curve=("${KNOCKOFF_CURVE[@]}")
        if final_variant "$victim"; then curve=(); fi  # the budget curve: the teacher's and MISLEADER's only
        for budget in "${curve[@]}"; do
            # shellcheck disable=SC2086
            KNOCKOFF_BUDGET="$budget" knockoff_attack "$victim" "${COMPARE_SEEDS[0]}" "${COMPARE_POOLS[0]}" \
                ${VICTIM[$victim]} --tag "${ATTACK_TAG:+$ATTACK_TAG-}q$budget"
        done
        if [ "$LABEL_ONLY" = 1 ]; then
            for seed in "${LABEL_SEEDS[@]}"; do
                # shellcheck disable=SC2086
                knockoff_attack "$victim" "$seed" "${COMPARE_POOLS[0]}" ${VICTIM[$victim]} --victim_output label
            done
        fi
    done
fi

if phase final; then
    say "phase 3: DFME at ${QUERY_BUDGET}M queries, each victim's strongest grid setting"
    declare -A BEST=()
    for victim in "${VICTIMS[@]}"; do
        BEST[$victim]=""
        if [ ${#NAMES[@]} -gt 0 ]; then
            BEST[$victim]=$(python -m misleader.report --csv "$RESULTS" --config "$CONFIG" --strongest "$victim" \
                            --grid "${NAMES[@]}" --grid_budget "$GRID_BUDGET" --grid_seed "$GRID_SEED")
            if [ -z "${BEST[$victim]}" ]; then
                say "$victim: no final runs yet, its grid is not complete"
                continue
            fi
            say "$victim: strongest grid setting ${BEST[$victim]}"
        fi
        case "$victim" in
            lambda0|homogeneous) seeds=("${VARIANT_SEEDS[@]}");;
            *) seeds=("${COMPARE_SEEDS[@]}");;
        esac
        for seed in "${seeds[@]}"; do
            # shellcheck disable=SC2086
            best_attack "$victim" "$seed" "$QUERY_BUDGET" "$ATTACK_TAG" "${BEST[$victim]}" ${VICTIM[$victim]}
        done
    done
    # API defenses on the teacher and MISLEADER. With a grid: the bare model's strongest setting (and the
    # AWARE_SETTINGS that apply to the defense) at GRID_BUDGET, seed GRID_SEED (the search), FINAL_DEFENSES also
    # at QUERY_BUDGET on the paired seeds. Without a grid: the config's DFME settings at QUERY_BUDGET on the
    # paired seeds.
    for defense in "${API_DEFENSES[@]}"; do
        final=0
        if in_list "$defense" "${FINAL_DEFENSES[@]}"; then final=1; fi
        for victim in teacher misleader; do
            if [ ${#NAMES[@]} -eq 0 ]; then
                for seed in "${COMPARE_SEEDS[@]}"; do
                    # shellcheck disable=SC2086
                    dfme_attack "$victim" "$seed" ${VICTIM[$victim]} --api_defense "$defense"
                done
                continue
            fi
            [ -z "${BEST[$victim]:-}" ] && continue  # waits for the bare model's grid
            # shellcheck disable=SC2046
            searched=$(distinct "${BEST[$victim]}" $(aware_for "$defense"))
            for name in $searched; do
                # shellcheck disable=SC2086
                best_attack "$victim" "$GRID_SEED" "$GRID_BUDGET" "$GRID_TAG" "$name" ${VICTIM[$victim]} --api_defense "$defense"
            done
            [ "$final" = 1 ] || continue
            # the defended victim's own strongest of the settings searched on it, on validation accuracy
            # shellcheck disable=SC2086
            dbest=$(python -m misleader.report --csv "$RESULTS" --config "$CONFIG" --strongest "$victim" \
                    --api_defense "$defense" --grid_budget "$GRID_BUDGET" --grid_seed "$GRID_SEED" \
                    --grid $searched)
            if [ -z "$dbest" ]; then
                say "$victim + $defense: no final runs yet, its search is not complete"
                continue
            fi
            for seed in "${COMPARE_SEEDS[@]}"; do
                # shellcheck disable=SC2086
                best_attack "$victim" "$seed" "$QUERY_BUDGET" "$ATTACK_TAG" "$dbest" ${VICTIM[$victim]} --api_defense "$defense"
            done
        done
    done
    # MISLEADER_VARIANTS: MISLEADER's strongest setting and VARIANT_GRID's at GRID_BUDGET, seed GRID_SEED (the
    # search); FINAL_VARIANTS also at QUERY_BUDGET on the paired seeds, with the search's strongest on validation
    for victim in "${KNOBS[@]}"; do
        if [ ${#NAMES[@]} -eq 0 ]; then
            seeds=("$GRID_SEED")
            if final_variant "$victim"; then seeds=("${COMPARE_SEEDS[@]}"); fi
            for seed in "${seeds[@]}"; do
                # shellcheck disable=SC2086
                dfme_attack "$victim" "$seed" ${VICTIM[$victim]}
            done
            continue
        fi
        [ -z "${BEST[misleader]:-}" ] && continue  # waits for MISLEADER's grid
        searched=$(distinct "${BEST[misleader]}" "${VARIANT_GRID[@]}")
        for name in $searched; do
            # shellcheck disable=SC2086
            best_attack "$victim" "$GRID_SEED" "$GRID_BUDGET" "$GRID_TAG" "$name" ${VICTIM[$victim]}
        done
        final_variant "$victim" || continue
        # shellcheck disable=SC2086
        vbest=$(python -m misleader.report --csv "$RESULTS" --config "$CONFIG" --strongest "$victim" \
                --grid_budget "$GRID_BUDGET" --grid_seed "$GRID_SEED" --grid $searched)
        if [ -z "$vbest" ]; then
            say "$victim: no final runs yet, its search is not complete"
            continue
        fi
        for seed in "${COMPARE_SEEDS[@]}"; do
            # shellcheck disable=SC2086
            best_attack "$victim" "$seed" "$QUERY_BUDGET" "$ATTACK_TAG" "$vbest" ${VICTIM[$victim]}
        done
    done
    if [ "$COMPARE_EXTRAS" = 1 ]; then
        seed="${COMPARE_SEEDS[0]}"
        for entry in "${MEMBERS[@]}"; do
            read -r arch _ <<< "$entry"
            dfme_attack "member-$arch" "$seed" --victim "Defense/cache/defense/$DATASET-$arch${TAG:+-$TAG}.pt"
        done
        # shellcheck disable=SC2086
        dfme_attack misleader "$seed" ${VICTIM[misleader]} --probs_as_logits 1 --tag "${ATTACK_TAG:+$ATTACK_TAG-}pal"
    fi
fi

# the report of the rows this comparison writes ($RESULTS); a CSV of one's own gets a report folder of its own, so
# the committed results/<config>/report.md is never overwritten by another machine's runs
REPORT=(bash report.sh --csv "$RESULTS" --config "$CONFIG")
realpath_of() { python -c 'import os, sys; print(os.path.realpath(sys.argv[1]))' "$1"; }
if [ "$(realpath_of "$RESULTS")" != "$(realpath_of results/results.csv)" ]; then
    own="${RESULTS%.csv}"
    [ "$own" = "$RESULTS" ] && own="$RESULTS-report"  # a CSV named without .csv: its report beside it, not inside
    REPORT+=(--out "$own/$CONFIG")
fi
[ ${#NAMES[@]} -gt 0 ] && REPORT+=(--grid "${NAMES[@]}")
[ ${#AWARE_SETTINGS[@]} -gt 0 ] && REPORT+=(--aware "${AWARE_SETTINGS[@]}")
[ ${#VARIANT_GRID[@]} -gt 0 ] && REPORT+=(--variant_grid "${VARIANT_GRID[@]}")
if [ ${#NAMES[@]} -gt 0 ]; then  # phase 3's runs at QUERY_BUDGET: the headline says which are still to run
    FINALS=(teacher misleader "${FINAL_KNOBS[@]}")
    [ ${#VARIANT_SEEDS[@]} -gt 0 ] && FINALS+=(lambda0 homogeneous)
    for defense in "${FINAL_DEFENSES[@]}"; do FINALS+=("teacher + $defense" "misleader + $defense"); done
    REPORT+=(--final_budget "$QUERY_BUDGET" --final_victims "${FINALS[@]}")
fi
if [ "$LIST" != 1 ]; then "${REPORT[@]}"
elif phase final; then say "then the report: $(printf '%q ' "${REPORT[@]}" | sed 's/ $//')"; fi
