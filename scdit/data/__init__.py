"""Data layer: validation, representation, vocabularies, datasets and splits."""
