"""
mlops serving: a prediction API that speaks MLflow's scoring protocol.

Serves ``models:/<name>@<alias>`` from the MLflow registry (default ``iris`` /
``champion``), loaded with MLflow's own pyfunc loader, and follows the alias:
a poller resolves it every few seconds, loads a new version beside the one in
service, warms it, and swaps one reference. A request reads that reference
once, so a swap never fails a request.

Routes:
  POST /invocations  what `mlflow models serve` takes: exactly one of
                     dataframe_split, dataframe_records, inputs, instances (JSON),
                     CSV with a header, or Parquet -> {"predictions": [...]}
  GET  /health       the server is alive (200), with the model state
  GET  /ready        200 once a model is loaded, 503 before; while the alias
                     points at a version that could not be loaded, still 200
                     (this one keeps serving) with servesAlias false and a reason
                     naming both versions and the error, which the agent's
                     readiness probe reads
  GET  /version      versions of this API, MLflow and the model served
  GET  /models       name, version, alias, run, loaded at
  GET  /metrics      Prometheus text (all workers)

A drop-in for MLflow's scoring server (serving_input.py): where MLflow answers
200, the same predictions; where it answers 4xx, a 4xx that says what is wrong
and what is allowed: 400, 413 (body over the cap) or 415 (content type).

API keys: when MLOPS_SERVING_API_KEY_<n> or MLOPS_DASHBOARD_API_KEY is set (the
agent renders them from serving.apiKeys and serving.dashboardApiKey into the
service's 0600 env file), every route except /health and /ready needs one of
them, as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; without a key
or with a wrong one the answer is 401 with a JSON message and
``WWW-Authenticate: Bearer``. Keys are compared in constant time (as SHA-256
digests, so not even their length shows). The load balancer's health check and
the agent's probes use /health and /ready, which stay open.

Speed: /invocations is a pure ASGI handler (class Invocations). For a model
whose signature has only numeric columns (the iris model), the input is checked
against the signature once (serving_input.py) and the flavor's own predict is
called with a DataFrame of the signature's columns and dtypes, which skips
pyfunc's second schema enforcement. When every column is a double and the model
gives the same answers for a float64 array in signature order (checked on a
sample before the model is swapped in), it gets that array and skips the
DataFrame too, and concurrent requests share one predict call when that was
checked to give every row the answer it gets alone (serving_batch.py). Every
other input and model goes through MLflow's own scoring function.

Settings (environment): MLFLOW_TRACKING_URI (with MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD for an MLflow with basic auth), MLOPS_SERVING_MODEL_NAME,
MLOPS_SERVING_MODEL_ALIAS, MLOPS_SERVING_POLL_SECONDS,
MLOPS_SERVING_MAX_BODY_BYTES, MLOPS_SERVING_MODEL_CACHE (where model versions
are downloaded), PROMETHEUS_MULTIPROC_DIR (set by serving_main.py).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import logging
import os
import shutil
import threading
import time
import warnings
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import pandas as pd
from fastapi import FastAPI
from fastapi.responses import Response
from serving_batch import Batcher
from serving_input import (
    FORMATS,
    PARQUET_TYPE,
    BadInput,
    content_type,
    fast_input,
    mlflow_answer,
    model_input,
    short,
)

API_VERSION = "1.0.0"
NUMERIC = {"double": np.float64, "float": np.float32, "long": np.int64, "integer": np.int32}

log = logging.getLogger("mlops.serving")

MODEL_NAME = os.environ.get("MLOPS_SERVING_MODEL_NAME", "iris")
MODEL_ALIAS = os.environ.get("MLOPS_SERVING_MODEL_ALIAS", "champion")
POLL_SECONDS = float(os.environ.get("MLOPS_SERVING_POLL_SECONDS", "5"))
MAX_BODY_BYTES = int(os.environ.get("MLOPS_SERVING_MAX_BODY_BYTES", str(5 * 1024 * 1024)))
MODEL_CACHE = os.environ.get("MLOPS_SERVING_MODEL_CACHE", "")


# --------------------------------------------------------------------- metrics

_multiproc = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    _registry = CollectorRegistry()
    if _multiproc:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(_registry)
        _metric_registry = None  # multiprocess: values live in files, the collector reads them
    else:
        _metric_registry = _registry
    REQUESTS = Counter(
        "mlops_serving_requests", "Prediction requests by status code", ["code"], registry=_metric_registry
    )
    REQUESTS_OK = REQUESTS.labels("200")
    ROWS = Counter("mlops_serving_predicted_rows", "Rows predicted", registry=_metric_registry)
    BATCHED = Counter(
        "mlops_serving_batched_requests",
        "Requests predicted together with others in one call of the model",
        registry=_metric_registry,
    )
    LATENCY = Histogram(
        "mlops_serving_request_seconds",
        "Time to answer /invocations",
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        registry=_metric_registry,
    )
    LOADS = Counter("mlops_serving_model_loads", "Model loads by result", ["result"], registry=_metric_registry)
    VERSION = Gauge(
        "mlops_serving_model_version",
        "Registered model version being served",
        multiprocess_mode="max",
        registry=_metric_registry,
    )
except ImportError:  # pragma: no cover - the lock file always has prometheus-client
    _registry = None


# ---------------------------------------------------------------------- models


class Loaded:
    """One loaded model version. Immutable once built; swapped as a whole."""

    def __init__(self, model: Any, version: str, run_id: str | None, source: str):
        self.model = model
        self.version = version
        self.run_id = run_id
        self.source = source
        self.loaded_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        schema = model.metadata.get_input_schema()
        self.schema = schema
        # A model with a params schema: MLflow checks a request's params against it, so such a
        # request takes MLflow's path (the fast path ignores params, as MLflow does without one).
        self.has_params = model.metadata.get_params_schema() is not None
        self.columns: list[str] | None = None
        self.dtypes: dict[str, Any] = {}
        self.fast = None
        # Set by _warm when the flavor gives the same answers for a plain float64 array in
        # signature order as for the DataFrame (sklearn without name-based column selection).
        self.array_ok = False
        # Set by _warm when rows predicted together get the answers they get alone (see Batcher).
        self.batch_ok = False
        if schema is not None and not schema.is_tensor_spec() and schema.has_input_names():
            self.columns = list(schema.input_names())
            types = [getattr(t, "name", t) for t in schema.input_types()]
            if all(str(t) in NUMERIC for t in types):
                self.dtypes = {c: NUMERIC[str(t)] for c, t in zip(self.columns, types)}
                impl = getattr(model, "_model_impl", None)
                if impl is not None and callable(getattr(impl, "predict", None)):
                    self.fast = impl.predict

    def describe(self) -> dict[str, Any]:
        return {
            "name": MODEL_NAME,
            "version": self.version,
            "alias": MODEL_ALIAS,
            "uri": f"models:/{MODEL_NAME}@{MODEL_ALIAS}",
            "source": self.source,
            "runId": self.run_id,
            "loadedAt": self.loaded_at,
            "columns": self.columns,
            # How requests reach the model: a checked float64 array, a typed DataFrame, or pyfunc's predict.
            "inputPath": "array" if self.array_ok else "dataframe" if self.fast is not None else "pyfunc",
            "batched": self.batch_ok,
        }


class ModelHolder:
    """Resolves the alias on a timer and swaps in new versions."""

    def __init__(self) -> None:
        self.current: Loaded | None = None
        self.last_error: str | None = "not loaded yet"
        self.last_check: str | None = None
        # (version, error) while the alias points at a version that could not be loaded.
        self.unloadable: tuple[str, str] | None = None
        self.first_load = threading.Event()  # set once a first load succeeded or failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                self.refresh()
                self.first_load.set()
                delay = POLL_SECONDS
            except Exception as exc:  # noqa: BLE001 - reported on /health and /ready, retried
                self.last_error = short(exc)
                self.first_load.set()
                log.warning("model %s@%s: %s", MODEL_NAME, MODEL_ALIAS, self.last_error)
                # Retry sooner while nothing is served; back off to the poll period otherwise.
                delay = min(POLL_SECONDS, 2.0) if self.current is None else POLL_SECONDS

    def refresh(self) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient()
        try:
            mv = client.get_model_version_by_alias(MODEL_NAME, MODEL_ALIAS)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower():
                raise RuntimeError(f"no version of registered model {MODEL_NAME} has alias {MODEL_ALIAS} yet") from None
            if "error code 403" in str(exc):
                # MLflow's basic auth answers 403 alike for a model the user may not read and one
                # that does not exist yet (so that 403 tells nothing about what exists).
                user = os.environ.get("MLFLOW_TRACKING_USERNAME", "(none)")
                raise RuntimeError(
                    f"MLflow answered 403 for {MODEL_NAME}@{MODEL_ALIAS} as user {user}: no registered model "
                    f"{MODEL_NAME} yet, or the user has no READ on it"
                ) from None
            raise
        self.last_check = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if self.current is not None and self.current.version == str(mv.version):
            self.last_error = None
            self.unloadable = None
            return
        try:
            loaded = self._load(str(mv.version), mv.run_id)
        except Exception as exc:
            self.unloadable = (str(mv.version), f"{type(exc).__name__}: {short(exc)}")
            raise
        previous = self.current
        self.current = loaded  # the swap: one reference
        self.last_error = None
        self.unloadable = None
        # The model, MLflow, pandas and scikit-learn are millions of objects that live as long as the
        # process: out of the garbage collector's sight, a request that allocates many rows no longer
        # pays for full collections that scan them all (a 10,000-row request: 50 ms -> 7 ms).
        gc.freeze()
        if _registry is not None:
            LOADS.labels("ok").inc()
            VERSION.set(float(mv.version))
        log.info(
            "serving %s version %s (was %s)", MODEL_NAME, mv.version, previous.version if previous else "nothing"
        )

    def _load(self, version: str, run_id: str | None) -> Loaded:
        import mlflow

        uri = f"models:/{MODEL_NAME}/{version}"
        path = None
        try:
            path = _download(uri, version)
            model = mlflow.pyfunc.load_model(path)
            loaded = Loaded(model, version, run_id, uri)
            _warm(loaded)
            return loaded
        except Exception:
            if _registry is not None:
                LOADS.labels("error").inc()
            if path and MODEL_CACHE and os.path.dirname(path) == MODEL_CACHE:
                # Files that do not load leave the cache: repaired files are downloaded on the next try.
                shutil.rmtree(path, ignore_errors=True)
            raise


def _download(uri: str, version: str) -> str:
    """Downloads a version once into the cache (atomic rename); workers share it."""
    import mlflow

    if not MODEL_CACHE:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri)
    safe = "".join(ch for ch in MODEL_NAME if ch.isalnum() or ch in "-_.")
    final = os.path.join(MODEL_CACHE, f"{safe}-v{version}")
    if os.path.isfile(os.path.join(final, "MLmodel")):
        return final
    os.makedirs(MODEL_CACHE, exist_ok=True)
    tmp = os.path.join(MODEL_CACHE, f".tmp-{os.getpid()}-{time.monotonic_ns()}")
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        # download_artifacts writes the model directory's content under tmp.
        try:
            os.rename(tmp, final)
        except OSError:
            if not os.path.isfile(os.path.join(final, "MLmodel")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _warm(loaded: Loaded) -> None:
    """
    Predictions before the swap, so the first request does not pay for lazy setup.
    Also decides whether requests may skip the DataFrame (array_ok: every column is a
    double and the model answers a plain array exactly as it answers the frame) and
    whether concurrent requests may share one call (batch_ok: rows predicted together
    get exactly the answers they get alone). A model that fails these checks is served
    all the same, through the frame, one request at a time.
    """
    if not (loaded.columns and loaded.dtypes):
        return
    ncols = len(loaded.columns)
    ints = [j for j, c in enumerate(loaded.columns) if loaded.dtypes[c] in (np.int64, np.int32)]
    simple = np.arange(8 * ncols, dtype=np.float64).reshape(8, ncols) / 3
    simple[:, ints] = np.floor(simple[:, ints])
    _predict(loaded, model_input(simple, loaded))  # a model that fails here is not swapped in
    if loaded.fast is None or ints or any(dt is not np.float64 for dt in loaded.dtypes.values()):
        return
    # Rows over a few orders of magnitude, both signs.
    rng = np.random.default_rng(12)
    sample = np.round(rng.normal(0, 1, (48, ncols)) * 10.0 ** rng.integers(-1, 3, (48, 1)), 3)
    sample[:8] = simple
    try:
        by_frame = _predict(loaded, model_input(sample, loaded))
        by_array = loaded.fast(sample)
        loaded.array_ok = bool(np.array_equal(np.asarray(by_array), np.asarray(by_frame)))
        if loaded.array_ok and isinstance(by_array, np.ndarray) and len(by_array) == len(sample):
            alone = [loaded.fast(sample[i : i + 1]) for i in range(len(sample))]
            loaded.batch_ok = all(
                isinstance(a, np.ndarray) and np.array_equal(a, by_array[i : i + 1]) for i, a in enumerate(alone)
            )
    except Exception:  # noqa: BLE001 - e.g. a ColumnTransformer that selects columns by name
        loaded.array_ok = loaded.batch_ok = False


batcher = Batcher(lambda loaded, arr: _predict(loaded, arr), lambda n: BATCHED.inc(n) if _registry is not None else None)
BATCH_MAX_ROWS = 1000


def _predict(loaded: Loaded, frame: Any) -> Any:
    if loaded.fast is not None:
        return loaded.fast(frame)
    return loaded.model.predict(frame)


async def _predict_rows(loaded: Loaded, arr: np.ndarray, frame: Any) -> Any:
    if loaded.batch_ok and len(arr) <= BATCH_MAX_ROWS:
        return await batcher.submit(loaded, arr)
    return _predict(loaded, frame)


def _jsonable(pred: Any) -> Any:
    if isinstance(pred, np.ndarray):
        return pred
    if isinstance(pred, pd.DataFrame):
        return pred.to_dict(orient="records")
    if isinstance(pred, pd.Series):
        return pred.to_numpy()
    return pred


def _predictions_json(pred: Any) -> bytes:
    try:
        return orjson.dumps({"predictions": _jsonable(pred)}, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # e.g. an array of objects (string labels): MLflow's own conversion
        from mlflow.utils.proto_json_utils import _get_jsonable_obj

        return orjson.dumps({"predictions": _get_jsonable_obj(pred, pandas_orient="records")})


# --------------------------------------------------------------------- the app


def _json(payload: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


def _error_body(status: int, message: str) -> bytes:
    if _registry is not None:
        REQUESTS.labels(str(status)).inc()
    return orjson.dumps({"error_code": "BAD_REQUEST" if status == 400 else str(status), "message": message})


async def _read_body(scope: dict[str, Any], receive: Any) -> bytes:
    length = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = value
    if length is not None:
        if not length.isdigit():
            raise BadInput("Content-Length is not a number")
        if int(length) > MAX_BODY_BYTES:
            raise BadInput(f"the body is {int(length)} bytes; the limit is {MAX_BODY_BYTES}", 413)
    chunks, total = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("the client went away")
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                raise BadInput(f"the body is over the limit of {MAX_BODY_BYTES} bytes", 413)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _invocations(scope: dict[str, Any], receive: Any) -> tuple[int, bytes]:
    """POST /invocations: the status and JSON body of the answer."""
    started = time.perf_counter()
    loaded = holder.current  # read once: a swap during this request does not affect it
    ctype = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            ctype = value.decode("latin-1")
    try:
        mime = content_type(ctype)
        body = await _read_body(scope, receive)
        if not body.strip() and mime != PARQUET_TYPE:
            raise BadInput(
                f"the body is empty; send a JSON object with exactly one of {', '.join(FORMATS)}, or CSV with a header"
            )
        if loaded is None and not holder.first_load.is_set():
            # This worker is still loading its first model (a sibling may already serve): wait for it.
            for _ in range(400):
                await asyncio.sleep(0.05)
                if holder.first_load.is_set():
                    break
            loaded = holder.current
        if loaded is None:
            return 503, _error_body(503, f"no model loaded: {holder.last_error}")
        refusal: BadInput | None = None
        if loaded.dtypes and mime != PARQUET_TYPE and not (loaded.has_params and b'"params"' in body):
            try:
                arr = fast_input(mime, body, loaded)
                frame = arr if loaded.array_ok else model_input(arr, loaded)
            except BadInput as exc:
                if exc.final:
                    raise
                refusal = exc
            else:
                try:
                    pred = await _predict_rows(loaded, arr, frame)
                except Exception:  # noqa: BLE001 - MLflow's path below answers it as MLflow would
                    log.exception("the model failed on input the fast path accepted; trying MLflow's path")
                else:
                    if _registry is not None:
                        REQUESTS_OK.inc()
                        ROWS.inc(len(arr))
                        LATENCY.observe(time.perf_counter() - started)
                    return 200, _predictions_json(pred)
        # MLflow's own parser and enforcement: inputs the fast path does not read, and other models.
        status, answer, reason = await asyncio.to_thread(mlflow_answer, body, ctype or "", loaded)
        if status == 200:
            if _registry is not None:
                REQUESTS_OK.inc()
                ROWS.inc(_count_predictions(answer))
                LATENCY.observe(time.perf_counter() - started)
            return 200, answer
        if refusal is not None:
            raise refusal
        if status >= 500:
            log.error("MLflow's scoring failed: %s", reason)
        return status, _error_body(status, reason)
    except BadInput as exc:
        return exc.status, _error_body(exc.status, str(exc))


def _count_predictions(answer: bytes) -> int:
    """Rows in MLflow's answer, for /metrics (its JSON may hold NaN, which orjson refuses)."""
    try:
        pred = orjson.loads(answer).get("predictions")
    except orjson.JSONDecodeError:
        return 0
    return len(pred) if isinstance(pred, (list, dict)) else 0


class Invocations:
    """
    ASGI middleware that answers POST /invocations itself (the hot path: no routing,
    no Request object); everything else goes on to FastAPI. Sits inside ApiKeys.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/invocations":
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            status, body = 405, _error_body(405, f"{scope['method']} /invocations: only POST is allowed")
            extra = [(b"allow", b"POST")]
        else:
            extra = []
            try:
                status, body = await _invocations(scope, receive)
            except ConnectionAbortedError:
                return
            except Exception as exc:  # noqa: BLE001 - never a stack trace to the client
                log.exception("POST /invocations failed")
                status, body = 500, _error_body(500, f"internal error: {short(exc)}")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


holder = ModelHolder()


# ------------------------------------------------------------------ API keys

# Routes the load balancer and the agent's probes call without a key.
OPEN_PATHS = frozenset({"/health", "/ready"})
KEY_HELP = "send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


def _api_key_digests(env: dict[str, str]) -> list[bytes]:
    """SHA-256 of every key the API accepts: MLOPS_SERVING_API_KEY_<n> and MLOPS_DASHBOARD_API_KEY."""
    names = [n for n in env if n.startswith("MLOPS_SERVING_API_KEY_")] + ["MLOPS_DASHBOARD_API_KEY"]
    return [hashlib.sha256(env[n].encode()).digest() for n in sorted(names) if env.get(n)]


def _presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request carries: `Authorization: Bearer <key>`, else `X-API-Key: <key>`."""
    bearer = api_key = None
    for name, value in headers:
        if name == b"authorization" and bearer is None:
            scheme, _, rest = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and rest.strip():
                bearer = rest.strip()
        elif name == b"x-api-key" and api_key is None and value.strip():
            api_key = value.strip()
    return bearer if bearer is not None else api_key


class ApiKeys:
    """
    ASGI middleware: every route but OPEN_PATHS needs one of the keys. Pure ASGI (no
    BaseHTTPMiddleware): a request costs one header scan and a digest comparison per key.
    """

    def __init__(self, app: Any, digests: list[bytes]) -> None:
        self.app = app
        self.digests = digests

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.digests or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = _presented_key(scope["headers"])
        if presented is not None:
            got = hashlib.sha256(presented).digest()
            ok = False
            for d in self.digests:  # every key compared, in constant time each
                ok |= hmac.compare_digest(got, d)
            if ok:
                await self.app(scope, receive, send)
                return
            message = f"the API key is not valid; {KEY_HELP}"
        else:
            message = f"this API needs an API key; {KEY_HELP}"
        if scope["path"] == "/invocations" and _registry is not None:
            REQUESTS.labels("401").inc()
        body = orjson.dumps({"error_code": "UNAUTHENTICATED", "message": message})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="mlops prediction API"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


app = FastAPI(title="mlops prediction API", version=API_VERSION, docs_url=None, redoc_url=None, openapi_url=None)
# Added first, so it sits inside ApiKeys: POST /invocations is answered only with a key.
app.add_middleware(Invocations)
app.add_middleware(ApiKeys, digests=_api_key_digests(dict(os.environ)))


def _exit_with_parent() -> None:
    """A worker ends when uvicorn's master dies (kill -9): otherwise it keeps the port and
    answers /ready 200 while every restart of the service fails with "address in use"
    (systemd's cgroup kill normally reaps it, but not where that kill fails)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the supervisor's group kill is all there is


@app.on_event("startup")
def _startup() -> None:
    import sklearn

    _exit_with_parent()
    # What MLflow's scoring server sets (models with type hints read it); the fallback path runs MLflow's code.
    os.environ["_MLFLOW_IS_IN_SERVING_ENVIRONMENT"] = "true"
    # MLflow's scoring function warns on every input it refuses; the client gets the reason, the log need not.
    logging.getLogger("mlflow.pyfunc.scoring_server").setLevel(logging.ERROR)

    # The input is validated here (finite numbers); sklearn's own re-checks cost more than the model.
    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
    # An array in signature order (see _warm) carries no column names; the columns were checked here.
    warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
    holder.start()


@app.on_event("shutdown")
def _shutdown() -> None:
    holder.stop()


@app.post("/invocations", include_in_schema=False)
def _invocations_route() -> Response:
    """Never called (Invocations answers this path first); here so that /invocations/ redirects, as in MLflow."""
    return _json({"error_code": "500", "message": "unreachable"}, 500)


@app.get("/health")
def health() -> Response:
    cur = holder.current
    return _json(
        {
            "status": "ok",
            "model": cur.describe() if cur else None,
            "lastError": holder.last_error,
            "lastCheck": holder.last_check,
        }
    )


@app.get("/ready")
def ready() -> Response:
    cur = holder.current
    if cur is None:
        return _json({"ready": False, "reason": f"no model loaded: {holder.last_error}"}, 503)
    # Still 200 when the alias points at a version that could not be loaded (this one keeps serving,
    # the load balancer keeps it); servesAlias and reason tell the agent, whose probe checks them.
    wanted = holder.unloadable
    reason = (
        f"serving {MODEL_NAME} version {cur.version}, but {MODEL_ALIAS} points at version {wanted[0]}, "
        f"which could not be loaded: {wanted[1]}"
        if wanted
        else None
    )
    return _json(
        {
            "ready": True,
            "model": f"{MODEL_NAME} version {cur.version} (@{MODEL_ALIAS})",
            "servesAlias": wanted is None,
            "reason": reason,
        }
    )


@app.get("/version")
def version() -> Response:
    import mlflow

    cur = holder.current
    return _json({"api": API_VERSION, "mlflow": mlflow.__version__, "model": cur.describe() if cur else None})


@app.get("/models")
def models() -> Response:
    cur = holder.current
    return _json({"models": [cur.describe()] if cur else [], "lastError": holder.last_error})


@app.get("/metrics")
def metrics() -> Response:
    if _registry is None:
        return Response("", media_type="text/plain")
    return Response(generate_latest(_registry), media_type="text/plain; version=0.0.4; charset=utf-8")
