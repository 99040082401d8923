"""Shared plumbing: settings, errors, logging, database and embedded servers."""
