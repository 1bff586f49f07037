"""The errors onnxbit raises for a user's mistake or a bad file.

Every one of them is an :class:`OnnxbitError`; the CLI prints such an error
as one ``Error: ...`` line (no traceback) and exits non-zero. Anything else
reaching the CLI is a bug in onnxbit. The classes also derive from the
built-in error a caller would expect (ValueError, OSError), so code written
against those keeps working.
"""

from __future__ import annotations


class OnnxbitError(Exception):
    """A problem with the user's input, named in the message."""


class ModelError(OnnxbitError, ValueError):
    """The model is malformed or unreadable, or the rewritten model failed validation."""


class ConfigError(OnnxbitError, ValueError):
    """A conversion setting is unknown, out of range or incompatible."""


class OutputPathError(OnnxbitError, ValueError):
    """An output path would overwrite the input or another output, or cannot be written."""


class LayerError(OnnxbitError, ValueError):
    """One layer cannot be converted as asked; the message names the layer."""
