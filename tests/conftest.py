"""Under pytest-xdist (`-n 2`) each worker and the processes it starts use one thread: two workers on two cores
with two threads each would fight over them."""
import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
