# Sourced by teacher.sh, train.sh and test.sh: loads configs/${CONFIG:-quick}.sh or stops with exit 2.
CONFIG="${CONFIG:-quick}"
if [ ! -f "configs/${CONFIG}.sh" ]; then
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
COMPARE_SEEDS=(0 1 2)  # seeds of the teacher and MISLEADER attacks of compare.sh
DEVICE="${DEVICE:-auto}"     # environment may override: DEVICE=cpu bash test.sh
VAL_SIZE=""            # empty: the dataset's default (5000; 1000 for synthetic)
RESUME="${RESUME:-0}"       # RESUME=1 bash test.sh continues killed runs and skips finished ones
PROGRESS="${PROGRESS:-1}"   # 0 hides the tqdm bars
TEACHER_ARGS=()        # extra flags for Defense/train_teacher.py
DEFENSE_ARGS=()        # extra flags for Defense/train_defense.py (every member)
DFME_ARGS=()           # extra flags for DFME/dfme.py (every attack)
# shellcheck source=/dev/null
source "configs/${CONFIG}.sh"
COMMON=(--dataset "$DATASET" --seed "$SEED" --device "$DEVICE" --progress "$PROGRESS")
[ -n "$VAL_SIZE" ] && COMMON+=(--val_size "$VAL_SIZE")
TAGARG=()
[ -n "$TAG" ] && TAGARG=(--tag "$TAG")
ATTACK_TAG="${ATTACK_TAG:-$TAG}"
ATTACK_TAGARG=()
[ -n "$ATTACK_TAG" ] && ATTACK_TAGARG=(--tag "$ATTACK_TAG")
true
