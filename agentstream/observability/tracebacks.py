"""Where a user's code failed: the innermost frame of theirs, and a bounded traceback."""

from __future__ import annotations

import sysconfig
import traceback
from pathlib import Path

__all__ = ["format_error", "user_frame"]

_PACKAGE = str(Path(__file__).resolve().parent.parent)
_STDLIB = tuple(
    str(Path(p).resolve())
    for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
)
_SITE = ("site-packages", "dist-packages")


def user_frame(exc: BaseException) -> str | None:
    """``file:line`` of the innermost frame of ``exc``'s traceback in the user's code (not
    agentstream's, not the standard library's; a library frame only if no other is left)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [
        f
        for f in frames
        if not f.filename.startswith(_PACKAGE) and not f.filename.startswith(_STDLIB)
    ]
    app = [f for f in ours if not any(part in f.filename for part in _SITE)]
    candidates = app or ours or frames
    if not candidates:
        return None
    return f"{candidates[-1].filename}:{candidates[-1].lineno}"


def format_error(exc: BaseException, limit: int = 8192) -> str:
    """The traceback of ``exc`` (with its causes), at most ``limit`` characters (the end,
    where the error is, is kept)."""
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]
