"""Errors a user can act on: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class ImgclustError(Exception):
    """A problem with the user's input or environment, described in one actionable line."""

    exit_code = 2


class PluginError(ImgclustError):
    """A plugin could not be found, loaded or used."""


class SettingsError(ImgclustError):
    """A setting is unknown, badly typed or inconsistent."""


class DataError(ImgclustError):
    """Input images or features are missing, empty, malformed or inconsistent."""


class ContentChangedError(DataError):
    """A run's images cannot be shown to be what it clustered: changed since, never
    recorded, or their record is damaged."""


def one_line(exc: BaseException, limit: int = 300, *, with_type: bool = False) -> str:
    """An exception's message on one line and at most ``limit`` characters (its type when it has
    no message, or first with ``with_type``: ``KeyError: 'missing'``): how a library's failure
    reads inside one of imgclust's one-line errors."""
    text = " ".join(str(exc).split())
    if not text:
        text = type(exc).__name__
    elif with_type:
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
