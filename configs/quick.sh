# quick: the default. Fashion-MNIST sized so that teacher.sh + train.sh + test.sh fit 10 minutes on a 2-core CPU
# (measured from a fresh clone: teacher 38 s, members ~85 s each, DFME 53-61 s and Knockoff 15-16 s per victim).
DATASET=fashionmnist
TAG=quick
SEEDS=(0)

TEACHER_MODEL=lenet5
TEACHER_EPOCHS=10
TEACHER_BATCH=256
TEACHER_ARGS=(--optimizer adam --lr 2e-3 --scheduler cosine)

# "arch lambda T alpha [attacker_arch]" (the MNIST-like values are unpublished; the reference starting point)
MEMBERS=("lenet5 0.5 2 0.3" "lenet5half 0.5 2 0.3" "lenet5fifth 0.5 2 0.3")
DEFENSE_EPOCHS=6
DEFENSE_BATCH=256
LR_DEFENSE=0.1
LR_ATTACKER=0.01
A_ITER=1

STUDENTS=(lenet5)
QUERY_BUDGET=0.1       # a twentieth of DFME's 2M for MNIST-like data: a demonstration, not an evaluation
DFME_BATCH=64          # DFME uses 256; at a small budget smaller batches give the student 4x more steps
DFME_ARGS=(--ngf 32)   # a narrower generator than DFME's 64, ~3x cheaper, so two attacks fit in minutes
KNOCKOFF_ARGS=(--epochs 10)  # 20,000 pool images, 10 epochs over the transfer set (the default 30 costs 3x)
# MISINFO_ARCH=lenet5       # train.sh: the adaptive-misinformation model, Defense/cache/misinfo/fashionmnist-lenet5-quick.pt
COMPARE_EXTRAS=1       # the quick table also has each member alone and MISLEADER with --probs_as_logits
