"""
Starts the prediction API: uvicorn with N worker processes (uvloop, httptools).

Prepares what the workers share before they start: the Prometheus multiprocess
directory (emptied, so counters start from zero with the service) and the
model cache (old downloads pruned to the newest few).

Serves serving_app's app through serving_drain.py, which drains on SIGTERM
(MLOPS_SERVING_DRAIN_SECONDS) before uvicorn's graceful shutdown; requests in
flight then get GRACEFUL_SHUTDOWN_SECONDS to finish.

Settings (environment): MLOPS_SERVING_HOST, MLOPS_SERVING_PORT,
MLOPS_SERVING_WORKERS, MLOPS_SERVING_STATE_DIR, MLOPS_SERVING_DRAIN_SECONDS,
and those of serving_app.py.
"""

from __future__ import annotations

import os
import shutil
import sys

# Requests in flight when the drain ends get this long to finish. The agent's
# stop timeout for the service (role.json stopTimeoutSeconds, counted after the
# drain) must stay above it.
GRACEFUL_SHUTDOWN_SECONDS = 10


def _prepare(state: str) -> None:
    metrics = os.path.join(state, "metrics")
    shutil.rmtree(metrics, ignore_errors=True)
    os.makedirs(metrics, mode=0o750, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics
    cache = os.path.join(state, "models")
    os.makedirs(cache, mode=0o750, exist_ok=True)
    os.environ.setdefault("MLOPS_SERVING_MODEL_CACHE", cache)
    entries = sorted((e for e in os.scandir(cache)), key=lambda e: e.stat().st_mtime, reverse=True)
    for e in entries:
        if e.name.startswith(".tmp-"):
            shutil.rmtree(e.path, ignore_errors=True)
    for e in [e for e in entries if not e.name.startswith(".tmp-")][3:]:
        shutil.rmtree(e.path, ignore_errors=True)


def main() -> None:
    import uvicorn

    state = os.environ.get("MLOPS_SERVING_STATE_DIR")
    if state:
        _prepare(state)
    here = os.path.dirname(os.path.abspath(__file__))
    uvicorn.run(
        "serving_drain:app",
        app_dir=here,
        host=os.environ.get("MLOPS_SERVING_HOST", "127.0.0.1"),
        port=int(os.environ.get("MLOPS_SERVING_PORT", "8000")),
        workers=int(os.environ.get("MLOPS_SERVING_WORKERS", "1")),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=os.environ.get("MLOPS_SERVING_LOG_LEVEL", "info"),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


if __name__ == "__main__":
    sys.exit(main())
