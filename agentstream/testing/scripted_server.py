"""``ScriptedChatServer``: a real HTTP server speaking the OpenAI and Anthropic APIs, offline.

Tests (yours too) run agents against it with the real SDKs over a real socket::

    with ScriptedChatServer() as server:
        server.add(ScriptedReply.tools(("lookup_order", {"order_id": "A-1"})),
                   ScriptedReply.text("Your order A-1 has shipped."))
        model = OpenAIChatModel("gpt-4o-mini", base_url=server.openai_url, api_key="test")
        ...
        assert server.count("chat") == 2

It serves ``POST /v1/chat/completions`` and ``POST /v1/embeddings`` (OpenAI) and
``POST /v1/messages`` (Anthropic). Chat requests are answered by the scripted replies in
order; when none is left, by the ``responder`` function (``request -> ScriptedReply``),
else with an error. A reply can be text, tool calls, an HTTP error (with ``retry-after``),
and can be delayed or held until the test releases it. Embeddings are deterministic
hashed bags of words, so texts sharing words are similar. Every request is recorded in
:attr:`ScriptedChatServer.requests`. The server runs on its own thread and event loop, so
it serves sync tests, async tests and worker processes alike.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agentstream.testing._scripts import (
    Api,
    ScriptedReply,
    ScriptedRequest,
    anthropic_messages,
    hashed_embedding,
    words,
)

__all__ = ["ScriptedChatServer", "ScriptedReply", "ScriptedRequest"]


class ScriptedChatServer:
    """An OpenAI/Anthropic-compatible HTTP server answering from a script.

    Args:
        replies: scripted replies, served in order to chat requests (both APIs).
        responder: answers chat requests once the scripted replies are used up.
        host: the address to listen on (loopback by default).
        port: the port (0: a free one).
        dimensions: the size of embedding vectors.
    """

    def __init__(
        self,
        *replies: ScriptedReply,
        responder: Callable[[ScriptedRequest], ScriptedReply] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        dimensions: int = 64,
    ):
        self.requests: list[ScriptedRequest] = []
        self.responder = responder
        self.dimensions = dimensions
        self._replies: deque[ScriptedReply] = deque(replies)
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # -- script --------------------------------------------------------------------

    def add(self, *replies: ScriptedReply) -> ScriptedChatServer:
        """Append scripted replies."""
        with self._lock:
            self._replies.extend(replies)
        return self

    def reply_text(self, content: str, **kwargs: Any) -> ScriptedChatServer:
        """Append a final answer (``ScriptedReply.text``)."""
        return self.add(ScriptedReply.text(content, **kwargs))

    def reply_tool_calls(
        self, *calls: tuple[str, dict[str, Any]], **kwargs: Any
    ) -> ScriptedChatServer:
        """Append a turn asking for tool calls (``ScriptedReply.tools``)."""
        return self.add(ScriptedReply.tools(*calls, **kwargs))

    def reply_error(
        self, status: int = 500, error: str = "scripted error", **kwargs: Any
    ) -> ScriptedChatServer:
        """Append an HTTP error (``ScriptedReply.failure``)."""
        return self.add(ScriptedReply.failure(status, error, **kwargs))

    @property
    def request_count(self) -> int:
        """How many requests were served, of every API."""
        return self.count()

    def count(self, api: Api | None = None) -> int:
        """How many requests were served (of ``api``, if given)."""
        with self._lock:
            return sum(1 for r in self.requests if api is None or r.api == api)

    @property
    def remaining(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._replies)

    # -- addresses -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port`` (Anthropic's SDK takes this as ``base_url``)."""
        if not self._started.is_set():
            raise RuntimeError("the server is not started: use start() or `with`")
        return f"http://{self._host}:{self._port}"

    @property
    def openai_url(self) -> str:
        """The ``base_url`` for the OpenAI SDK: ``http://host:port/v1``."""
        return f"{self.url}/v1"

    base_url = openai_url

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> ScriptedChatServer:
        """Start serving on a background thread; returns once it listens."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._serve, name="scripted-chat", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise RuntimeError(f"the scripted chat server did not start within {timeout_s} s")
        if self._error is not None:
            raise RuntimeError(f"the scripted chat server failed to start: {self._error}")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving (held replies are released)."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> ScriptedChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> ScriptedChatServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._started.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/embeddings", self._embeddings)
        app.router.add_post("/v1/messages", self._anthropic)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self._port = sockets[0].getsockname()[1]
        self._started.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    # -- handlers --------------------------------------------------------------------

    def _record(
        self, api: Api, body: dict[str, Any], messages: list[dict[str, Any]]
    ) -> ScriptedRequest:
        with self._lock:
            request = ScriptedRequest(api, body, messages, next(self._numbers))
            self.requests.append(request)
            return request

    def _next_reply(self, request: ScriptedRequest) -> ScriptedReply:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        if self.responder is not None:
            return self.responder(request)
        return ScriptedReply.failure(500, "the scripted chat server has no reply left")

    async def _wait(self, reply: ScriptedReply) -> None:
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        hold = reply.hold
        if hold is not None:
            stopping = self._stopping
            while not hold.is_set() and not (stopping and stopping.is_set()):
                await asyncio.sleep(0.02)

    @staticmethod
    def _usage(request: ScriptedRequest, reply: ScriptedReply) -> tuple[int, int]:
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = len(words(request.text))
        completion = reply.completion_tokens
        if completion is None:
            completion = len(words(reply.content)) + 5 * len(reply.tool_calls)
        return prompt, completion

    def _request_id(self, request: ScriptedRequest) -> str:
        return f"req_scripted_{request.number}"

    async def _body(self, http: web.Request) -> dict[str, Any]:
        try:
            body = await http.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body is not JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body is not a JSON object")
        return body

    def _error_response(
        self, request: ScriptedRequest, reply: ScriptedReply, api: Api
    ) -> web.Response:
        headers = {
            "x-request-id": self._request_id(request),
            "request-id": self._request_id(request),
        }
        if reply.retry_after_s is not None:
            headers["retry-after"] = str(reply.retry_after_s)
        if api == "anthropic":
            body: dict[str, Any] = {
                "type": "error",
                "error": {"type": "api_error", "message": reply.error},
            }
        else:
            body = {"error": {"message": reply.error, "type": "scripted_error", "code": None}}
        return web.json_response(body, status=reply.status, headers=headers)

    async def _chat(self, http: web.Request) -> web.Response:
        body = await self._body(http)
        request = self._record("chat", body, list(body.get("messages") or []))
        reply = self._next_reply(request)
        await self._wait(reply)
        if reply.status != 200:
            return self._error_response(request, reply, "chat")
        prompt, completion = self._usage(request, reply)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{request.number}_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
                for i, (name, arguments) in enumerate(reply.tool_calls)
            ]
        return web.json_response(
            {
                "id": f"chatcmpl-{request.number}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": str(body.get("model") or "scripted"),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            },
            headers={"x-request-id": self._request_id(request)},
        )

    async def _anthropic(self, http: web.Request) -> web.Response:
        body = await self._body(http)
        request = self._record("anthropic", body, anthropic_messages(body))
        reply = self._next_reply(request)
        await self._wait(reply)
        if reply.status != 200:
            return self._error_response(request, reply, "anthropic")
        prompt, completion = self._usage(request, reply)
        content: list[dict[str, Any]] = []
        if reply.content:
            content.append({"type": "text", "text": reply.content})
        content += [
            {"type": "tool_use", "id": f"toolu_{request.number}_{i}", "name": name, "input": args}
            for i, (name, args) in enumerate(reply.tool_calls)
        ]
        return web.json_response(
            {
                "id": f"msg_{request.number}",
                "type": "message",
                "role": "assistant",
                "model": str(body.get("model") or "scripted"),
                "content": content,
                "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": completion},
            },
            headers={"request-id": self._request_id(request)},
        )

    async def _embeddings(self, http: web.Request) -> web.Response:
        body = await self._body(http)
        request = self._record("embeddings", body, [])
        inputs = body.get("input")
        texts = inputs if isinstance(inputs, list) else [inputs]
        dimensions = int(body.get("dimensions") or self.dimensions)
        return web.json_response(
            {
                "object": "list",
                "model": str(body.get("model") or "scripted"),
                "data": [
                    {
                        "object": "embedding",
                        "index": i,
                        "embedding": hashed_embedding(str(t), dimensions),
                    }
                    for i, t in enumerate(texts)
                ],
                "usage": {
                    "prompt_tokens": len(words(request.text)),
                    "total_tokens": len(words(request.text)),
                },
            },
            headers={"x-request-id": self._request_id(request)},
        )
