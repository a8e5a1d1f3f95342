"""The errors a user can act on: the data, a recipe or an option they gave is unusable (DataError), or a
model cannot be loaded (ModelLoadError).

Its own module so that every floor (readers, data, the training configuration, the command lines) raises
and catches the same class without importing the module that reads files.
"""

from __future__ import annotations


class DataError(ValueError):
    """Input data a user supplied is unusable; the message says what is wrong and how to fix it."""


class ModelLoadError(RuntimeError):
    """A base model or adapter could not be loaded; the message says why and what to do."""
