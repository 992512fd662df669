# cifar10: the paper's CIFAR-10 settings. Needs a GPU: hours per stage even there.
DATASET=cifar10
TAG=""
SEEDS=(0)

TEACHER_MODEL=resnet34_8x
TEACHER_EPOCHS=200
TEACHER_BATCH=128
TEACHER_ARGS=(--optimizer sgd --lr 0.1 --weight_decay 5e-4 --scheduler multistep --milestones 80 120)

# MISLEADER's published members: "arch lambda T alpha [attacker_arch]"
MEMBERS=("resnet18_8x 0.001 6 0.3" "mobilenet_v2 0.05 4 0.9" "densenet121 0.01 2 0.3")
DEFENSE_EPOCHS=200
DEFENSE_BATCH=256
LR_DEFENSE=0.1
LR_ATTACKER=0.01
A_ITER=1

STUDENTS=(resnet18_8x)
QUERY_BUDGET=20
DFME_BATCH=256
DFME_ARGS=(--steps 0.1 0.3 0.5)  # DFME's CIFAR-10 schedule
# Knockoff in distribution (the victim's training images) and out of it (another dataset's natural images,
# procedural gratings)
COMPARE_POOLS=(cifar10 cifar100 synthetic)
