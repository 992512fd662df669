# quick: Fashion-MNIST sized for a 2-core CPU (teacher ~1 min, members ~1-2 min each, attacks ~2.5 min each).
DATASET=fashionmnist
TAG=quick
SEEDS=(0)

TEACHER_MODEL=lenet5
TEACHER_EPOCHS=15
TEACHER_BATCH=256
TEACHER_ARGS=(--optimizer adam --lr 2e-3 --scheduler cosine)

# "arch lambda T alpha [attacker_arch]" (the MNIST-like values are unpublished; the reference starting point)
MEMBERS=("lenet5 0.5 2 0.3" "lenet5half 0.5 2 0.3" "lenet5fifth 0.5 2 0.3")
DEFENSE_EPOCHS=8          # 5 epochs left the ensemble 3 points under the teacher on validation data
DEFENSE_BATCH=256
LR_DEFENSE=0.1
LR_ATTACKER=0.01
A_ITER=1

STUDENTS=(lenet5)
QUERY_BUDGET=0.2
DFME_BATCH=64          # DFME uses 256; at a small budget smaller batches give the student 4x more steps
DFME_ARGS=(--ngf 32)   # a narrower generator than DFME's 64, ~3x cheaper, so two attacks fit in minutes
# MISINFO_ARCH=lenet5       # train.sh: the adaptive-misinformation model, Defense/cache/misinfo/fashionmnist-lenet5-quick.pt
COMPARE_EXTRAS=1       # the quick table also has each member alone and MISLEADER with --probs_as_logits
