# fashionmnist: the MNIST-like paper settings of design.md on Fashion-MNIST (2M-query attacks: ~75 min each on 2 CPU cores).
DATASET=fashionmnist
TAG=""
SEEDS=(0)

TEACHER_MODEL=lenet5
TEACHER_EPOCHS=10
TEACHER_BATCH=256
TEACHER_ARGS=(--optimizer adam --lr 1e-3 --scheduler none)

MEMBERS=("lenet5 0.5 2 0.3" "lenet5half 0.5 2 0.3" "lenet5fifth 0.5 2 0.3")
DEFENSE_EPOCHS=10
DEFENSE_BATCH=256
LR_DEFENSE=0.1
LR_ATTACKER=0.01
A_ITER=1

STUDENTS=(lenet5)
QUERY_BUDGET=2
DFME_BATCH=256
DFME_ARGS=()
