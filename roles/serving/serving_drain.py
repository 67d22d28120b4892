"""
The prediction API's drain: what it does when it is stopped on purpose.

uvicorn serves ``serving_drain:app``, which is serving_app's app behind this
thin ASGI wrapper. On the first SIGTERM a process receives (systemd stopping
the unit, at a config change, an upgrade, a role change, VM shutdown or
instance-pool scale-in; the agent's process supervisor stopping the service;
uvicorn's master passing the signal on to its workers), it does not shut down
at once:

1. ``GET /ready`` answers 503 ``{"ready": false, "status": "draining", ...}``
   at once, so the load balancer's health check takes this backend out of
   rotation (after its interval x unhealthy threshold);
2. every other request is served as before for MLOPS_SERVING_DRAIN_SECONDS,
   with ``Connection: close`` so no idle keep-alive connection is left open
   for a client to send on when the server closes;
3. then uvicorn's own graceful shutdown runs: it stops accepting, lets the
   requests in flight finish (up to its timeout_graceful_shutdown) and exits.

Every process of the service gets the signal at once (systemd's default
KillMode=control-group and the agent's process supervisor signal the whole
group; uvicorn's master signals all its workers together), so all of them
drain together. Further SIGTERMs during the drain are ignored; SIGINT
(Ctrl-C) skips the rest of the drain. MLOPS_SERVING_DRAIN_SECONDS 0 (the
default; `mlops-agent up`, where no load balancer checks the API) stops at once.
The agent sets the variable from serving.drain and gives the service a stop
timeout that covers the drain and the graceful shutdown.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

from serving_app import app as _inner


def _seconds() -> float:
    text = os.environ.get("MLOPS_SERVING_DRAIN_SECONDS", "") or "0"
    try:
        value = float(text)
    except ValueError:
        raise SystemExit(f"MLOPS_SERVING_DRAIN_SECONDS={text!r} is not a number of seconds") from None
    if value < 0:
        raise SystemExit(f"MLOPS_SERVING_DRAIN_SECONDS={text!r} is negative")
    return value


class Drain:
    """ASGI wrapper: /ready 503 while draining; the SIGTERM handler that starts the drain."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds
        self.deadline: float | None = None  # monotonic time the drain ends; None: not draining
        self._installed = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.deadline is None or scope["type"] != "http":
            if scope["type"] == "lifespan" and not self._installed:
                self._install()
            await self.inner(scope, receive, send)
            return
        if scope["path"] == "/ready":
            await self._draining(send)
            return

        async def closing(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.inner(scope, receive, closing)

    async def _draining(self, send: Any) -> None:
        left = max(0.0, (self.deadline or 0) - time.monotonic())
        body = json.dumps(
            {
                "ready": False,
                "status": "draining",
                "reason": f"draining before a stop: still serving, but load balancers should stop sending requests here; stopping in {left:.1f} s",
                "secondsLeft": round(left, 1),
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _install(self) -> None:
        """Called at lifespan startup, when uvicorn has installed its own handlers (it calls them once the drain is over)."""
        self._installed = True
        if threading.current_thread() is not threading.main_thread():
            return  # no signals here (a test client); uvicorn's behaviour stays
        stop = signal.getsignal(signal.SIGTERM)
        if not callable(stop) or self.seconds <= 0:
            return

        def on_term(sig: int, frame: Any) -> None:
            if self.deadline is not None:
                return  # already draining: a second SIGTERM (e.g. uvicorn's master passing it on) changes nothing
            self.deadline = time.monotonic() + self.seconds
            print(
                f"[{os.getpid()}] SIGTERM: draining for {self.seconds:g} s (/ready answers 503) before shutting down",
                flush=True,
            )
            timer = threading.Timer(self.seconds, stop, (sig, None))
            timer.daemon = True
            timer.start()

        signal.signal(signal.SIGTERM, on_term)


app = Drain(_inner, _seconds())
