# mnist: design.md's MNIST-like settings on MNIST, DFME included (2M-query attacks, DFME's generator and
# milestones). On Fashion-MNIST those DFME settings left the bare teacher's clone at 57.9 % and DFME's own
# 2M-query schedule raised it to 81.5 % (README, Results); configs/fashionmnist.sh shows that variant.
source configs/fashionmnist_design.sh
DATASET=mnist
