# cifar100: CIFAR-10's settings on CIFAR-100 (member values unpublished for CIFAR-100), 200M queries.
source configs/cifar10.sh
DATASET=cifar100
QUERY_BUDGET=200
COMPARE_POOLS=(cifar100 cifar10 synthetic)
