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
