"""Acting on a finished run folder: opening it safely, reading back its features and images,
the neighbour index (similar), duplicates, and applying a curation."""
