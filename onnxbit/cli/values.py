"""Option values the CLI commands share."""

from __future__ import annotations

import click


def positive_ints(text: str, what: str) -> list[int]:
    """'1,2' -> [1, 2]; a click error naming `what` for anything but comma-separated integers >= 1."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise click.BadParameter(f"{what} must be positive integers, got {text!r}")
    return values
