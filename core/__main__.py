"""``python -m imgclust`` runs the CLI."""

from imgclust.cli.app import main

main()
