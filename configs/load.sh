# Sourced by teacher.sh, train.sh and test.sh: loads configs/${CONFIG:-quick}.sh or stops with exit 2.
CONFIG="${CONFIG:-quick}"
if [[ $CONFIG == load || $CONFIG == */* || ! -f "configs/${CONFIG}.sh" ]]; then  # a name in configs/, not a path
    valid=$(ls configs/*.sh | xargs -n1 basename | sed 's/\.sh$//' | grep -v '^load$' | tr '\n' ' ')
    echo "error: unknown config '${CONFIG}'; valid configs: ${valid}" >&2
    exit 2
fi
# Defaults a config may override.
TAG=""                 # suffix of every checkpoint name, so configs on one dataset do not overwrite each other
ATTACK_TAG=""          # suffix of the attack checkpoints only (empty: TAG), for configs that share the trained
                       # teacher and members but attack them with other settings
SEED=0                 # seed of teacher and defense training
SEEDS=(0)              # seeds of the attack runs of test.sh
# compare.sh: every victim (teacher, MISLEADER, lambda = 0 ensemble, homogeneous ensemble) meets its strongest attacker
COMPARE_SEEDS=(0 1 2)  # paired seeds: headline DFME of teacher and MISLEADER, Knockoff of every victim
VARIANT_SEEDS=(0)      # headline DFME seeds of the lambda = 0 and homogeneous ensembles
DFME_GRID=()           # "name entry flags...": attack settings tried on each victim (entry dfme or disguide; the flags
                       # follow DFME_ARGS / DISGUIDE_ARGS); empty: no grid, the headline runs DFME_ARGS
GRID_BUDGET=1          # queries (millions) of a grid run
GRID_SEED=0            # seed of the grid runs; a victim's strongest setting is its best clone on the validation split
COMPARE_POOLS=()       # Knockoff pools of compare.sh (empty: KNOCKOFF_POOLS)
KNOCKOFF_CURVE=()      # more Knockoff budgets (millions) against teacher and MISLEADER, first seed and pool: a budget
                       # curve (the KNOCKOFF_BUDGET runs are its point at that budget)
LABEL_ONLY=1           # 1: also label-only Knockoff (KNOCKOFF_BUDGET, first pool) on teacher and MISLEADER
LABEL_SEEDS=()         # seeds of the label-only Knockoff runs (those against the API_DEFENSES too); empty: the first
                       # of COMPARE_SEEDS
API_DEFENSES=()        # output defenses served on top of the teacher and MISLEADER ("NAME:key=value,...", see --api_defense):
                       # Knockoff (seeds x pools) and label-only Knockoff in phase 2, DFME at GRID_BUDGET in phase 3
FINAL_DEFENSES=()      # of API_DEFENSES, the candidates also attacked at QUERY_BUDGET on the paired COMPARE_SEEDS
AWARE_GRID=()          # "name entry flags...": settings like DFME_GRID's that only the defended victims meet (named in
                       # AWARE_SETTINGS), e.g. "kl disguide --loss kl" for answers with exact zeros (rounding, top-k)
AWARE_SETTINGS=()      # "setting [defense name...]": a grid setting the defended victims also meet, for attackers that
                       # know the defense; with names, only those defenses' (e.g. "data adaptive_misinformation":
                       # queries kept in the data range against adaptive misinformation; a name must be a defense of
                       # API_DEFENSES); without, every defense
MISLEADER_VARIANTS=()  # "name flags...": the config's members retrained with other MISLEADER knobs (e.g. "lam1 --lambda_ 1",
                       # "aiter3 --a_iter 3") into ensemble <tag>-name, label misleader-name; searched like API_DEFENSES
VARIANT_GRID=()        # DFME_GRID settings the MISLEADER_VARIANTS also meet, besides MISLEADER's strongest (e.g. those
                       # strongest on the other ensembles); each variant's strongest of them on validation counts
FINAL_VARIANTS=()      # of MISLEADER_VARIANTS' names, those also attacked at QUERY_BUDGET on the paired COMPARE_SEEDS
                       # with their search's strongest setting, and by Knockoff as MISLEADER is (COMPARE_SEEDS x
                       # COMPARE_POOLS, label-only on LABEL_SEEDS); e.g. "seed1" for the variant "seed1 --seed 1":
                       # MISLEADER trained again from another seed
COMPARE_EXTRAS=0       # 1: also DFME on each member alone and on MISLEADER with --probs_as_logits (first seed)
LIST="${LIST:-0}"      # 1: stage functions print their command line instead of running it (compare.sh --list)
DEVICE="${DEVICE:-auto}"     # environment may override: DEVICE=cpu bash test.sh
VAL_SIZE=""            # empty: the dataset's default (5000; 1000 for synthetic)
RESUME="${RESUME:-0}"       # RESUME=1 bash test.sh continues killed runs and skips finished ones
PROGRESS="${PROGRESS:-auto}"  # auto: bars on a terminal, plain lines every 30 s in a log file; 1 bars; 0 none
TEACHER_ARGS=()        # extra flags for Defense/train_teacher.py
DEFENSE_ARGS=()        # extra flags for Defense/train_defense.py (every member)
DFME_ARGS=()           # extra flags for DFME/dfme.py (every attack)
KNOCKOFF_BUDGET=0.02   # Knockoff's query budget in millions of images (0.02 = 20,000)
KNOCKOFF_POOLS=()      # query pools of test.sh's Knockoff attacks (empty: the config's dataset)
KNOCKOFF_ARGS=()       # extra flags for DFME/knockoff.py (every attack)
DISGUIDE_ARGS=()       # extra flags for DFME/disguide.py (every disguide_attack call)
MISINFO_ARCH=""        # set (e.g. lenet5): train.sh also trains the misinformation model of the adaptive-
                       # misinformation API defense, Defense/cache/misinfo/<dataset>-<arch>[-tag].pt
MISINFO_ARGS=()        # extra flags for Defense/train_misinformation.py (e.g. --epochs 5)
RESULTS="${RESULTS:-results/results.csv}"  # environment may override: RESULTS=results/mine.csv bash test.sh
DATA_ROOT="${DATA_ROOT:-}"  # environment may override: the datasets' folder for every stage (empty: data/)
# a relative DATA_ROOT names a folder from where the script was started (each script cd's to the repository first)
[[ -n "$DATA_ROOT" && "$DATA_ROOT" != /* ]] && DATA_ROOT="${OLDPWD:-$PWD}/$DATA_ROOT"
# shellcheck source=/dev/null
source "configs/${CONFIG}.sh"
# the variables without a default: every config sets them (configs/quick.sh shows each)
missing=()
for v in DATASET TEACHER_MODEL TEACHER_EPOCHS TEACHER_BATCH MEMBERS DEFENSE_EPOCHS DEFENSE_BATCH LR_DEFENSE LR_ATTACKER \
         A_ITER STUDENTS QUERY_BUDGET DFME_BATCH; do
    [[ -v $v ]] || missing+=("$v")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "error: configs/${CONFIG}.sh does not set ${missing[*]} (no default: configs/quick.sh shows each)" >&2
    exit 2
fi
COMMON=(--dataset "$DATASET" --seed "$SEED" --device "$DEVICE" --progress "$PROGRESS")
[ -n "$DATA_ROOT" ] && COMMON+=(--data_root "$DATA_ROOT")
[ -n "$VAL_SIZE" ] && COMMON+=(--val_size "$VAL_SIZE")
TAGARG=()
[ -n "$TAG" ] && TAGARG=(--tag "$TAG")
ATTACK_TAG="${ATTACK_TAG:-$TAG}"
ATTACK_TAGARG=()
[ -n "$ATTACK_TAG" ] && ATTACK_TAGARG=(--tag "$ATTACK_TAG")
[ ${#KNOCKOFF_POOLS[@]} -eq 0 ] && KNOCKOFF_POOLS=("$DATASET")

# The command line of each stage, once: train.sh, test.sh and compare.sh call these, so a new flag is one edit.
last_flags() {  # command...: sets CMD to the command with each --flag (and its values) kept only where it last
    # appears, so a config's or variant's flag replaces the default before it instead of following it on the line
    local -A last=()
    local i keep=1
    local -a toks=("$@")
    for i in "${!toks[@]}"; do [[ ${toks[i]} == --* ]] && last[${toks[i]}]=$i; done
    CMD=()
    for i in "${!toks[@]}"; do
        [[ ${toks[i]} == --* ]] && { [ "${last[${toks[i]}]}" = "$i" ] && keep=1 || keep=0; }
        [ "$keep" = 1 ] && CMD+=("${toks[i]}")
    done
}
run() {  # run a stage's command, or with LIST=1 print it as one self-contained line (run from the repository root)
    last_flags "$@"
    if [ "$LIST" = 1 ]; then printf '%q ' "${CMD[@]}" | sed 's/ $//'; echo; else "${CMD[@]}"; fi
}
say() {  # a heading: "== text" in a log, "# text" (a comment line) in a run list
    if [ "$LIST" = 1 ]; then echo "# $*"; else echo "== $*"; fi
}
train_member() {  # arch lambda T alpha attacker tag seed [extra flags...]
    local arch="$1" lambda="$2" T="$3" alpha="$4" attacker="$5" tag="$6" seed="$7"
    shift 7
    run python Defense/train_defense.py "${COMMON[@]}" --seed "$seed" ${tag:+--tag "$tag"} --teacher_tag "$TAG" \
        --resume "$RESUME" --teacher_model "$TEACHER_MODEL" --defense_model "$arch" --attacker_model "$attacker" \
        --lambda_ "$lambda" --T "$T" --alpha "$alpha" --epochs "$DEFENSE_EPOCHS" --batch_size "$DEFENSE_BATCH" \
        --lr_defense "$LR_DEFENSE" --lr_attacker "$LR_ATTACKER" --a_iter "$A_ITER" "${DEFENSE_ARGS[@]}" "$@"
}
train_misinfo() {  # arch tag seed [extra flags...]
    local arch="$1" tag="$2" seed="$3"
    shift 3
    run python Defense/train_misinformation.py "${COMMON[@]}" --seed "$seed" ${tag:+--tag "$tag"} --resume "$RESUME" \
        --model "$arch" "${MISINFO_ARGS[@]}" "$@"
}
build_ensemble() {  # tag member... (each ARCH:TAG)
    local tag="$1"
    shift
    run python Defense/ensemble.py "${COMMON[@]}" ${tag:+--tag "$tag"} --teacher_tag "$TAG" --resume "$RESUME" \
        --teacher_model "$TEACHER_MODEL" --members "$@"
}
run_attack() {  # entry-point label seed budget flags...: what every attack call shares
    local script="$1" label="$2" seed="$3" budget="$4"
    shift 4
    run python "$script" --dataset "$DATASET" --device "$DEVICE" --progress "$PROGRESS" --resume "$RESUME" \
        ${VAL_SIZE:+--val_size "$VAL_SIZE"} ${DATA_ROOT:+--data_root "$DATA_ROOT"} "${ATTACK_TAGARG[@]}" \
        --seed "$seed" --label "$label" --teacher_model "$TEACHER_MODEL" --student_model "${STUDENT:-${STUDENTS[0]}}" \
        --query_budget "$budget" --config "$CONFIG" --results "$RESULTS" "$@"
}
dfme_attack() {  # label seed victim-and-extra-flags... (with --MAZE 1 in DFME_ARGS, set DFME_BATCH=128: typed flags win)
    local label="$1" seed="$2"
    shift 2
    say "DFME: $label, seed $seed"
    run_attack DFME/dfme.py "$label" "$seed" "$QUERY_BUDGET" --batch_size "$DFME_BATCH" "${DFME_ARGS[@]}" "$@"
}
knockoff_attack() {  # label seed pool victim-and-extra-flags...
    local label="$1" seed="$2" pool="$3"
    shift 3
    say "Knockoff: $label, pool $pool, seed $seed"
    run_attack DFME/knockoff.py "$label" "$seed" "$KNOCKOFF_BUDGET" --pool "$pool" "${KNOCKOFF_ARGS[@]}" "$@"
}
disguide_attack() {  # label seed victim-and-extra-flags...: DisGUIDE at DFME's budget and batch size
    local label="$1" seed="$2"
    shift 2
    say "DisGUIDE: $label, seed $seed"
    run_attack DFME/disguide.py "$label" "$seed" "$QUERY_BUDGET" --batch_size "$DFME_BATCH" "${DISGUIDE_ARGS[@]}" "$@"
}
victim_flags() {  # teacher | ensemble [tag]: the --victim flags of the config's teacher or an ensemble
    if [ "$1" = teacher ]; then echo --victim teacher ${TAG:+--teacher_tag "$TAG"}
    else echo --victim ensemble ${2:+--ensemble_tag "$2"}; fi
}
true
