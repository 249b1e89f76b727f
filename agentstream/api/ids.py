"""Stable identities: deterministic event ids (DESIGN.md, "Identity and determinism") and
the qualified names of classes and functions.

Its own module so that setup.py compiles it with the runtime's hot path (one id per sent
event); :mod:`agentstream.api.events` exports it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

__all__ = ["derive_event_id", "qualified_name"]

# Copied per id: cheaper than parsing blake2b's keyword arguments every time.
_BLAKE2B_12: Final = hashlib.blake2b(digest_size=12)


def derive_event_id(parent_id: str, action: str, index: int) -> str:
    """Id of the ``index``-th event sent by ``action`` while processing ``parent_id``."""
    digest = _BLAKE2B_12.copy()
    digest.update(f"{parent_id}\x1f{action}\x1f{index}".encode())
    return digest.hexdigest()


def qualified_name(obj: Any, separator: str = ".") -> str:
    """``module.QualName`` of a class or function (of its class for other objects): how
    event types, durable functions and exception types are named in records and headers.
    ``separator=":"`` gives ``module:QualName``, which splits back unambiguously."""
    module = getattr(obj, "__module__", None) or "?"
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}{separator}{name}"
