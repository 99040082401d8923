"""Delight: a self-hosted surprise-and-delight loyalty engine.

This package must stay importable without its dependencies installed:
``python -m service`` bootstraps the virtual environment from here.
"""
