"""Surprise controls: holdout, per-customer limits, the fatigue cap, budgets, pacing and stock."""
