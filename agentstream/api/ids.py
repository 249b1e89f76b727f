"""Deterministic event ids (DESIGN.md, "Identity and determinism").

Its own module so that setup.py compiles it with the runtime's hot path (one id per sent
event); :mod:`agentstream.api.events` exports it.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["derive_event_id"]

# Copied per id: cheaper than parsing blake2b's keyword arguments every time.
_BLAKE2B_12: Final = hashlib.blake2b(digest_size=12)


def derive_event_id(parent_id: str, action: str, index: int) -> str:
    """Id of the ``index``-th event sent by ``action`` while processing ``parent_id``."""
    digest = _BLAKE2B_12.copy()
    digest.update(f"{parent_id}\x1f{action}\x1f{index}".encode())
    return digest.hexdigest()
