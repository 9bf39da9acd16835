"""What the plan wants said once the event log runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple


class Note(NamedTuple):
    """Something the plan wants said once the event log runs: a typed event, not a sentence."""

    level: Literal["info", "warning"]
    event: str
    fields: Mapping[str, object]
