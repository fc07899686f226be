"""`quill serve-model`'s door (flows/model_server.RequestGuard), on a stand-in ASGI app: unknown params are
400 before the model runs, the body reaches the app unchanged, and a client that disconnects sets the
request's cancel event while the model works in a thread (as MLflow's scoring app runs it)."""

from __future__ import annotations

import asyncio
import json
import threading
from contextvars import ContextVar

from flows.model_server import RequestGuard


def run(guard: RequestGuard, body: bytes, path: str = "/invocations", disconnect_after_s: float | None = None):
    """(status, JSON or text response) of one request through `guard`; the client hangs up after
    `disconnect_after_s` seconds if given (else stays until the answer)."""
    sent: list[dict] = []

    async def go():
        answered = asyncio.Event()
        messages = [{"type": "http.request", "body": body[:5], "more_body": True},
                    {"type": "http.request", "body": body[5:], "more_body": False}]

        async def receive():
            if messages:
                return messages.pop(0)
            if disconnect_after_s is None:
                await answered.wait()
            else:
                await asyncio.sleep(disconnect_after_s)
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body":
                answered.set()

        await asyncio.wait_for(guard({"type": "http", "path": path, "method": "POST"}, receive, send), 30)

    asyncio.run(go())
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload) if payload.startswith(b"{") else payload.decode()


class StandIn:
    """An ASGI app like MLflow's: reads the whole body, then 'generates' in a worker thread until the
    request's cancel event is set or `work_s` pass; answers what it saw."""

    def __init__(self, cancelled: ContextVar, work_s: float = 0.0):
        self.cancelled, self.work_s, self.calls = cancelled, work_s, 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)

        def generate() -> bool:
            gone = self.cancelled.get()
            return gone is not None and gone.wait(self.work_s)

        stopped = await asyncio.to_thread(generate)
        out = json.dumps({"body": body.decode(), "cancelled": stopped}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})


def test_unknown_params_are_400_before_the_model_runs():
    app = StandIn(ContextVar("c", default=None))
    guard = RequestGuard(app, {"max_new_tokens", "seed"}, app.cancelled)
    status, answer = run(guard, json.dumps({"inputs": ["Once"], "params": {"max_new_token": 5, "seed": 1}}).encode())
    assert status == 400 and app.calls == 0
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "unknown params: max_new_token" in answer["message"] and "max_new_tokens, seed" in answer["message"]


def test_known_params_and_other_bodies_reach_the_app_unchanged():
    app = StandIn(ContextVar("c", default=None))
    guard = RequestGuard(app, {"max_new_tokens"}, app.cancelled)
    for body in (json.dumps({"inputs": ["Once"], "params": {"max_new_tokens": 5}}), '{"inputs": ["Once"]}',
                 "prompt\nOnce upon a time\n", "[1, 2]"):  # CSV and non-objects: MLflow's parser answers them
        status, answer = run(guard, body.encode())
        assert status == 200 and answer == {"body": body, "cancelled": False}
    status, answer = run(guard, b'{"params": {"anything": 1}}', path="/health")
    assert status == 200 and app.calls == 5, "only /invocations is checked"


def test_a_client_that_disconnects_cancels_its_request():
    cancelled: ContextVar[threading.Event | None] = ContextVar("c", default=None)
    app = StandIn(cancelled, work_s=20.0)
    guard = RequestGuard(app, None, cancelled)
    status, answer = run(guard, b'{"inputs": ["Once"]}', disconnect_after_s=0.2)
    assert status == 200 and answer["cancelled"] is True, "the model saw the event set, long before 20 s"
    assert cancelled.get() is None, "the event belongs to that request only"
    app.work_s = 0.0
    assert run(guard, b'{"inputs": ["Once"]}')[1]["cancelled"] is False
