# smoke: the synthetic dataset, every stage in well under a minute on 2 CPU cores. Never a result.
DATASET=synthetic
TAG=""
SEEDS=(0)

TEACHER_MODEL=lenet5
TEACHER_EPOCHS=3
TEACHER_BATCH=128
TEACHER_ARGS=(--optimizer adam --lr 2e-3 --scheduler none)

# one member per line: "arch lambda T alpha [attacker_arch]"
MEMBERS=("lenet5 0.5 2 0.3" "lenet5half 0.5 2 0.3")
DEFENSE_EPOCHS=2
DEFENSE_BATCH=128
LR_DEFENSE=0.05
LR_ATTACKER=0.01
A_ITER=1

STUDENTS=(lenet5)
QUERY_BUDGET=0.02      # millions
DFME_BATCH=64
DFME_ARGS=(--epoch_itrs 10 --ngf 16)
KNOCKOFF_BUDGET=0.002  # 2,000 pool images
KNOCKOFF_ARGS=(--epochs 5)
DISGUIDE_ARGS=(--epoch_itrs 10 --ngf 16 --replay_batch 64)  # disguide_attack (tests/test_adaptive.py)
# MISINFO_ARCH=lenet5fifth  # train.sh: the adaptive-misinformation model (--api_defense adaptive_misinformation:
#                            # tau=0.9,nu=100,model=Defense/cache/misinfo/synthetic-lenet5fifth.pt)
# MISINFO_ARGS=(--epochs 1)
