# fashionmnist_design: the reference MNIST-like settings exactly, DFME included (DFME's 64-wide generator for
# DFME and DisGUIDE alike, milestones at 10/30/50 % of the epochs for test.sh's DFME; compare.sh's grid settings keep
# their own --steps): ~75 min per 2M-query DFME attack on 2 CPU
# cores. Trains and reads the same teacher and members as configs/fashionmnist.sh; only the attack differs.
source configs/fashionmnist.sh
ATTACK_TAG=""
DFME_ARGS=(--steps 0.1 0.3 0.5)
DISGUIDE_ARGS=()
