"""Command-line entry points: extract features, train, evaluate, benchmark, publish."""
