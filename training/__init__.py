"""Command-line entry points: train, evaluate, report, publish."""

import os

# Quiet TensorFlow's C++ start-up messages; it reads this when it is imported, which every entry
# point here does after this package has been imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# NumPy's BLAS on one thread: the SCST sampler's small matrix products (captioning.scst) ran 7x
# slower on two threads that wait for each other whenever another process holds a core.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
