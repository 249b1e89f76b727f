"""Deterministic event ids (DESIGN.md, "Identity and determinism").

Its own module so that setup.py compiles it with the runtime's hot path (one id per sent
event); :mod:`agentstream.api.events` exports it.
"""

from __future__ import annotations

import hashlib

__all__ = ["derive_event_id"]


def derive_event_id(parent_id: str, action: str, index: int) -> str:
    """Id of the ``index``-th event sent by ``action`` while processing ``parent_id``."""
    return hashlib.blake2b(
        f"{parent_id}\x1f{action}\x1f{index}".encode(), digest_size=12
    ).hexdigest()
