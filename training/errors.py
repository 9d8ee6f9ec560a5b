"""Errors that carry one sentence a user can act on.

Every failure a user can cause (bad input, an unreachable service, too little data) is raised as a
:class:`DoppeltweetError` whose message is a single sentence; the CLI prints it and the bot relays
it verbatim, so the message is the user interface.
"""

from __future__ import annotations


class DoppeltweetError(Exception):
    """Base class: ``str(error)`` is one sentence meant for the user."""

    exit_code = 1


class InputError(DoppeltweetError):
    """The user gave something we cannot use (a bad handle, file, archive, prompt, option)."""

    exit_code = 2


class SourceError(DoppeltweetError):
    """A tweet source (X API, Bluesky, a file) could not deliver tweets."""


class DataError(DoppeltweetError):
    """The tweets we got cannot make a model (too few left after cleaning)."""


class ModelError(DoppeltweetError):
    """A base model or a stored model cannot be loaded, trained or used."""
