"""Measuring tools for the app and the library: ``python -m tools.benchmark`` (speed and memory,
warm, on Flickr8k test photos) and ``python -m tools.load_test`` (the JSON API under concurrent
load).  Nothing here is part of the library or run by the tests' timing-free suite."""

import os

# Quiet TensorFlow's C++ start-up messages; it reads this when it is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
