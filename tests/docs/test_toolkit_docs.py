"""docs/toolkit.md stays true: its ```python blocks run top to bottom in one namespace
(offline, against the ScriptedChatServer they start), and their asserts hold."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "toolkit.md"


def test_toolkit_chapter_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.S | re.M)
    assert len(blocks) >= 6
    module = types.ModuleType("toolkit_doc")
    module.__dict__["__name__"] = "toolkit_doc"
    sys.modules["toolkit_doc"] = module
    try:
        for number, block in enumerate(blocks, start=1):
            code = compile(block, f"docs/toolkit.md block {number}", "exec")
            exec(code, module.__dict__)
    finally:
        server = module.__dict__.get("server")
        if server is not None:
            server.stop()
        sys.modules.pop("toolkit_doc", None)
