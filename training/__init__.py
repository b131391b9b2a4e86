"""Command-line entry points: train, evaluate, report, publish."""

import os

# Quiet TensorFlow's C++ start-up messages; it reads this when it is imported, which every entry
# point here does after this package has been imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
