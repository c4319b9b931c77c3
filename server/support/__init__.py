"""Plumbing every layer may use: owned tasks, logs, metrics, the loop-lag monitor."""
