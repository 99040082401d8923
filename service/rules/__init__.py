"""Rules: campaign files, the catalogue and settings, loaded, type-checked and evaluated."""
