"""Evaluation: RewardBench scoring (pure) and statistics."""
