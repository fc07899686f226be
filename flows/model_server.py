"""`quill serve-model`: MLflow's scoring server for a registered model, strict at the door.

    quill serve-model                                   # models:/quill@champion on http://127.0.0.1:5001
    quill serve-model --model models:/quill/3 --port 8080

The app is MLflow's own (`mlflow.pyfunc.scoring_server.init`: /invocations, /ping, /health, /version,
the request and response formats of `mlflow models serve`), run by uvicorn in this process, behind one
ASGI layer (`RequestGuard`) that adds what that server lacks:
- param names outside the model's signature get HTTP 400 naming them (MLflow drops them with a warning,
  so a typo such as `max_new_token` silently ran with the default);
- while the model generates, the layer listens on the connection: when the client goes away it sets the
  request's cancel event, and Quill's model stops at its next token (the time limit stays the bound for
  a client that waits);
- SIGTERM or Ctrl-C stop the server after at most `grace` seconds for the requests in flight (each one
  also ends at its time limit).
"""

from __future__ import annotations

import asyncio
import json
import threading
from contextvars import ContextVar
from typing import Any

INVOCATIONS = "/invocations"


class RequestGuard:
    """ASGI wrapper of a scoring app: refuses unknown params, tells the model when its client left.

    `params`: the names a request may set (None: any); `cancelled`: the context variable the model
    reads its cancel event from (None: the model has none, so disconnects are only not signalled)."""

    def __init__(self, app: Any, params: set[str] | None, cancelled: ContextVar | None) -> None:
        self.app, self.params, self.cancelled = app, params, cancelled

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") != INVOCATIONS:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if unknown := self._unknown_params(body):
            known = ", ".join(sorted(self.params or ()))
            await _answer(send, 400, {"error_code": "INVALID_PARAMETER_VALUE",
                                      "message": f"unknown params: {', '.join(unknown)} (this model takes: {known})"})
            return
        gone = threading.Event()
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the connection is the watcher's now; the app never hears of it
            raise AssertionError("unreachable")

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        token = self.cancelled.set(gone) if self.cancelled is not None else None
        try:
            await self.app(scope, replay, send)  # the model runs in a thread that copies this context
        finally:
            if token is not None:
                self.cancelled.reset(token)
            watcher.cancel()

    def _unknown_params(self, body: bytes) -> list[str]:
        if self.params is None:
            return []
        try:
            params = json.loads(body).get("params")
        except (ValueError, AttributeError):  # not a JSON object: MLflow's own parser answers it
            return []
        return sorted(set(params) - self.params) if isinstance(params, dict) else []


async def _answer(send: Any, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def guarded_app(model_uri: str) -> Any:
    """MLflow's scoring app for `model_uri` behind RequestGuard, with the model's signature params."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:  # unknown model, version or alias: one line, not MLflow's traceback
        raise FileNotFoundError(f"{model_uri}: no such model in the MLflow registry at {mlflow.get_tracking_uri()} "
                                f"({exc.message.splitlines()[0] if exc.message else exc})") from exc
    schema = model.metadata.get_params_schema()
    params = {p.name for p in schema.params} if schema is not None else None
    try:
        cancelled = getattr(model.unwrap_python_model(), "cancelled", None)
    except Exception:  # not a Python model (another flavour): no cancel signal to give
        cancelled = None
    return RequestGuard(scoring_server.init(model), params, cancelled)


def serve_model(model_uri: str, host: str = "127.0.0.1", port: int = 5001, grace_s: float = 5.0) -> None:
    """Serve `model_uri` until SIGTERM or Ctrl-C (then at most `grace_s` seconds for requests in flight)."""
    import uvicorn

    from pipeline.tracking import configure

    configure()
    app = guarded_app(model_uri)
    uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=grace_s, log_level="info")
