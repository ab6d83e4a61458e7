"""Data: sources -> canonical pairs -> curated mixture -> tokenised batches."""
