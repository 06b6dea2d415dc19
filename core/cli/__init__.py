"""The ``imgclust`` command line: the typer app (``imgclust.cli.app``), its commands and the
listing of registered stages. Nothing below imports it."""
