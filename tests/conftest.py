"""Test-wide settings.

The tests run tiny tensors, where a second intra-op thread only adds synchronization; on a
loaded 2-core machine OpenMP's spinning threads made such ops 100x slower. One thread keeps
the suite fast and its time independent of what else the machine runs.
"""

import torch

torch.set_num_threads(1)
