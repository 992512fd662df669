# mnist: the reference MNIST-like settings on MNIST, DFME included (2M-query attacks, DFME's 64-wide generator
# and milestones 0.1 0.3 0.5). configs/fashionmnist.sh shows the variant with DFME's 2M-query schedule.
source configs/fashionmnist_design.sh
DATASET=mnist
# what configs/fashionmnist.sh names by dataset
COMPARE_POOLS=(mnist synthetic)
# the adaptive-misinformation thresholds were chosen on Fashion-MNIST: choose MNIST's with Defense/choose_tau.py
API_DEFENSES=("${API_DEFENSES[@]/fashionmnist-lenet5.pt/mnist-lenet5.pt}")
FINAL_DEFENSES=("${FINAL_DEFENSES[@]/fashionmnist-lenet5.pt/mnist-lenet5.pt}")
