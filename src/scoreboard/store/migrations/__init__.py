"""Versioned schema migrations, shipped as numbered SQL files per dialect.

``NNNN_description.sql``: a database at version ``v`` gets every file numbered
above ``v``, in order, each in its own transaction with the version bump.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from scoreboard.errors import StoreUnavailable


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """The dialect's migrations, in order. Raises ``StoreUnavailable`` naming the folder
    when the installed package holds none or a gap: a broken install, not a database fault."""
    folder = resources.files(__package__).joinpath(dialect)
    found = []
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.endswith(".sql"):
                number, _, rest = entry.name.partition("_")
                found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    found.sort(key=lambda m: m.version)
    if not found or [m.version for m in found] != list(range(1, len(found) + 1)):
        numbers = [m.version for m in found]
        raise StoreUnavailable(
            f"the installed scoreboard package is incomplete: its {dialect} schema migrations "
            f"({folder}) are {numbers or 'missing'}, not 1..N; reinstall it", "broken_install")
    return found
