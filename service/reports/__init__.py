"""Reports for analysts: what was given, used and what it cost."""
