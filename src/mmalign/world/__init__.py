"""The synthetic visual world: scenes with exact ground truth, text sets, benchmarks."""
