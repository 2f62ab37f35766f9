"""Errors that reach the user as one line and exit status 2.

A :class:`ConfigError` names the offending field (dotted, as in a scenario file) and the
allowed values. The CLI prints ``virtlab: error: <field>: <message>`` and exits with 2;
library callers get an ordinary :class:`ValueError` subclass.
"""

from __future__ import annotations

__all__ = ["ConfigError", "PreflightError"]


class ConfigError(ValueError):
    """A bad value in a scenario, profile or flag.

    Parameters
    ----------
    field:
        Dotted name of the field as the user wrote it, e.g. ``"paravirtual.ring_size"``.
    message:
        What is wrong and what is allowed, e.g. ``"must be a power of two in [2, 32768], got 100"``.

    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    def prefixed(self, prefix: str) -> ConfigError:
        """Return the same error with ``prefix.`` in front of the field name."""
        if not self.field:
            field = prefix
        elif self.field.startswith("["):  # guests[0].vcpus, as --set spells it
            field = f"{prefix}{self.field}"
        else:
            field = f"{prefix}.{self.field}"
        return ConfigError(field, self.message)


class PreflightError(RuntimeError):
    """The machine cannot run a real-system demo (not Linux, no privilege, ...).

    The message says, in plain words, why and what to do. The CLI prints it and exits with 2.
    """
