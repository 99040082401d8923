"""API keys: created from the command line, stored only as hashes, checked on every request."""
