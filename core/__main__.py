"""``python -m imgclust`` runs the CLI."""

from .cli import main

main()
