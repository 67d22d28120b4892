"""
mlops serving: a prediction API that speaks MLflow's scoring protocol.

Serves ``models:/<name>@<alias>`` from the MLflow registry (default ``iris`` /
``champion``), loaded with MLflow's own pyfunc loader, and follows the alias:
a poller resolves it every few seconds, loads a new version beside the one in
service, warms it, and swaps one reference. A request reads that reference
once, so a swap never fails a request.

Routes:
  POST /invocations  exactly one of dataframe_split, dataframe_records, inputs,
                     instances (JSON), or CSV with a header -> {"predictions": [...]}
  GET  /health       the server is alive (200), with the model state
  GET  /ready        200 once a model is loaded, 503 before
  GET  /version      versions of this API, MLflow and the model served
  GET  /models       name, version, alias, run, loaded at
  GET  /metrics      Prometheus text (all workers)

A client's mistake is a 400 (what is wrong, what is allowed), 413 (body over
the cap) or 415 (content type); never a 500.

API keys: when MLOPS_SERVING_API_KEY_<n> or MLOPS_DASHBOARD_API_KEY is set (the
agent renders them from serving.apiKeys and serving.dashboardApiKey into the
service's 0600 env file), every route except /health and /ready needs one of
them, as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; without a key
or with a wrong one the answer is 401 with a JSON message and
``WWW-Authenticate: Bearer``. Keys are compared in constant time (as SHA-256
digests, so not even their length shows). The load balancer's health check and
the agent's probes use /health and /ready, which stay open.

Speed: for a model whose signature has only numeric columns (the iris model),
the input is checked against the signature here, once, and the flavor's own
predict is called with a DataFrame of the signature's columns and dtypes, which
skips pyfunc's second schema enforcement. When every column is a double and the
model gives the same answers for a float64 array in signature order (checked
on a sample before the model is swapped in), it gets that array and skips the
DataFrame too. Every other model goes through ``PyFuncModel.predict`` and its
enforcement.

Settings (environment): MLFLOW_TRACKING_URI (with MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD for an MLflow with basic auth), MLOPS_SERVING_MODEL_NAME,
MLOPS_SERVING_MODEL_ALIAS, MLOPS_SERVING_POLL_SECONDS,
MLOPS_SERVING_MAX_BODY_BYTES, MLOPS_SERVING_MODEL_CACHE (where model versions
are downloaded), PROMETHEUS_MULTIPROC_DIR (set by serving_main.py).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
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
from fastapi import FastAPI, Request
from fastapi.responses import Response

API_VERSION = "1.0.0"
FORMATS = ("dataframe_split", "dataframe_records", "inputs", "instances")
JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv",)
NUMERIC = {"double": np.float64, "float": np.float32, "long": np.int64, "integer": np.int32}

log = logging.getLogger("mlops.serving")

MODEL_NAME = os.environ.get("MLOPS_SERVING_MODEL_NAME", "iris")
MODEL_ALIAS = os.environ.get("MLOPS_SERVING_MODEL_ALIAS", "champion")
POLL_SECONDS = float(os.environ.get("MLOPS_SERVING_POLL_SECONDS", "5"))
MAX_BODY_BYTES = int(os.environ.get("MLOPS_SERVING_MAX_BODY_BYTES", str(5 * 1024 * 1024)))
MODEL_CACHE = os.environ.get("MLOPS_SERVING_MODEL_CACHE", "")


class BadInput(Exception):
    """A client's mistake: answered with this status and message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


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
    ROWS = Counter("mlops_serving_predicted_rows", "Rows predicted", registry=_metric_registry)
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
        self.columns: list[str] | None = None
        self.dtypes: dict[str, Any] = {}
        self.fast = None
        # Set by _warm when the flavor gives the same answers for a plain float64 array in
        # signature order as for the DataFrame (sklearn without name-based column selection).
        self.array_ok = False
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
        }


class ModelHolder:
    """Resolves the alias on a timer and swaps in new versions."""

    def __init__(self) -> None:
        self.current: Loaded | None = None
        self.last_error: str | None = "not loaded yet"
        self.last_check: str | None = None
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
                self.last_error = _short(exc)
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
            return
        loaded = self._load(str(mv.version), mv.run_id)
        previous = self.current
        self.current = loaded  # the swap: one reference
        self.last_error = None
        if _registry is not None:
            LOADS.labels("ok").inc()
            VERSION.set(float(mv.version))
        log.info(
            "serving %s version %s (was %s)", MODEL_NAME, mv.version, previous.version if previous else "nothing"
        )

    def _load(self, version: str, run_id: str | None) -> Loaded:
        import mlflow

        uri = f"models:/{MODEL_NAME}/{version}"
        try:
            path = _download(uri, version)
            model = mlflow.pyfunc.load_model(path)
            loaded = Loaded(model, version, run_id, uri)
            _warm(loaded)
            return loaded
        except Exception:
            if _registry is not None:
                LOADS.labels("error").inc()
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
    Also decides whether requests may skip the DataFrame: only when every column is
    a double and the model answers a plain array exactly as it answers the frame.
    """
    if not (loaded.columns and loaded.dtypes):
        return
    sample = [[float(i + j) / 3 for j in range(len(loaded.columns))] for i in range(8)]
    frame = _frame(sample, loaded)
    by_frame = _predict(loaded, frame)
    if loaded.fast is None or any(dt is not np.float64 for dt in loaded.dtypes.values()):
        return
    try:
        by_array = loaded.fast(np.asarray(sample, dtype=np.float64))
        loaded.array_ok = bool(np.array_equal(np.asarray(by_array), np.asarray(by_frame)))
    except Exception:  # noqa: BLE001 - e.g. a ColumnTransformer that selects columns by name
        loaded.array_ok = False


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


holder = ModelHolder()


# ------------------------------------------------------------------ parsing


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, str):
        return f"string {orjson.dumps(v[:40]).decode()}"
    if isinstance(v, (list, dict)):
        return "array" if isinstance(v, list) else "object"
    return type(v).__name__


def _check_columns(got: list[str], loaded: Loaded, where: str) -> None:
    expected = loaded.columns or []
    if len(set(got)) != len(got):
        dup = sorted({c for c in got if got.count(c) > 1})
        raise BadInput(f"{where}: duplicate column(s) {', '.join(dup)}")
    missing = [c for c in expected if c not in got]
    extra = [c for c in got if c not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected column(s) {', '.join(extra)}")
        raise BadInput(f"{'; '.join(parts)} in {where}; the model expects exactly {', '.join(expected)}")


def _rows_from_records(records: Any, loaded: Loaded, where: str) -> list[list[Any]]:
    if not isinstance(records, list):
        raise BadInput(f"{where} must be a list of objects (one per row), got {_type_name(records)}")
    if not records:
        raise BadInput(f"{where} is empty: send at least one row")
    cols = loaded.columns or []
    expected = set(cols)
    rows = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise BadInput(f"{where}[{i}] must be an object of column: value, got {_type_name(rec)}")
        if rec.keys() != expected:
            _check_columns(list(rec.keys()), loaded, f"{where}[{i}]")
        rows.append([rec[c] for c in cols])
    return rows


def _rows_from_split(split: Any, loaded: Loaded) -> list[list[Any]]:
    if not isinstance(split, dict):
        raise BadInput(f"dataframe_split must be an object with columns and data, got {_type_name(split)}")
    unknown = set(split) - {"columns", "data", "index"}
    if unknown:
        raise BadInput(f"dataframe_split has unknown field(s) {', '.join(sorted(unknown))}; allowed: columns, data, index")
    columns, data = split.get("columns"), split.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise BadInput("dataframe_split.columns must be a list of column names")
    if not isinstance(data, list):
        raise BadInput("dataframe_split.data must be a list of rows (lists of values)")
    if not data:
        raise BadInput("dataframe_split.data is empty: send at least one row")
    cols = loaded.columns or []
    if columns != cols:
        _check_columns(columns, loaded, "dataframe_split.columns")
    order = None if columns == cols else [columns.index(c) for c in cols]
    n = len(columns)
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != n:
            what = f"{len(row)} values" if isinstance(row, list) else _type_name(row)
            raise BadInput(f"dataframe_split.data[{i}] must be a list of {n} values (one per column), got {what}")
    if order is None:
        return data
    return [[row[j] for j in order] for row in data]


def _rows_from_tensor_style(value: Any, loaded: Loaded, key: str) -> list[list[Any]]:
    """`inputs` / `instances`: records, columnar {column: [values]}, or rows in signature order."""
    cols = loaded.columns or []
    if isinstance(value, dict):
        _check_columns(list(value.keys()), loaded, key)
        lists = [value[c] for c in cols]
        if all(not isinstance(v, list) for v in lists):
            return [lists]  # one instance: {column: value}
        if not all(isinstance(v, list) for v in lists):
            raise BadInput(f"{key}: give every column a list of values, or every column one value")
        n = len(lists[0])
        if n == 0:
            raise BadInput(f"{key} is empty: send at least one row")
        if any(len(v) != n for v in lists):
            raise BadInput(f"{key}: every column needs the same number of values")
        return [list(r) for r in zip(*lists)]
    if isinstance(value, list):
        if not value:
            raise BadInput(f"{key} is empty: send at least one row")
        if all(isinstance(r, dict) for r in value):
            return _rows_from_records(value, loaded, key)
        n = len(cols)
        for i, row in enumerate(value):
            if not isinstance(row, list) or len(row) != n:
                raise BadInput(
                    f"{key}[{i}] must be an object of column: value or a list of {n} values in the order "
                    f"{', '.join(cols)}; got {_type_name(row)}"
                )
        return value
    raise BadInput(f"{key} must be a list of rows or an object of columns, got {_type_name(value)}")


def _frame(rows: list[list[Any]], loaded: Loaded) -> pd.DataFrame:
    """Checks every value against the column's numeric type; builds the typed frame."""
    cols = loaded.columns or []
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            t = type(v)
            if t is float or t is int:
                continue
            col = cols[j]
            kind = "an integer" if loaded.dtypes[col] in (np.int64, np.int32) else "a number"
            raise BadInput(f"row {i}, column {col}: expected {kind}, got {_type_name(v)}")
    arr = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise BadInput("values must be finite numbers")
    if loaded.array_ok:
        return arr
    frame = pd.DataFrame(arr, columns=cols, copy=False)
    for col, dt in loaded.dtypes.items():
        if dt is np.float64:
            continue
        if dt in (np.int64, np.int32):
            bad = np.flatnonzero(arr[:, cols.index(col)] % 1 != 0)
            if bad.size:
                raise BadInput(f"row {int(bad[0])}, column {col}: expected an integer, got a fraction")
        frame[col] = frame[col].astype(dt)
    return frame


def _parse_csv(body: bytes, loaded: Loaded) -> list[list[Any]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("the CSV body is not UTF-8") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise BadInput("the CSV body is empty: send a header row and at least one data row")
    header = [h.strip() for h in header]
    _check_columns(header, loaded, "the CSV header")
    idx = [header.index(c) for c in loaded.columns or []]
    rows = []
    for n, rec in enumerate(reader):
        if not rec:
            continue
        if len(rec) != len(header):
            raise BadInput(f"CSV row {n + 1} has {len(rec)} fields, the header has {len(header)}")
        row = []
        for j in idx:
            try:
                row.append(float(rec[j]))
            except ValueError:
                raise BadInput(f"CSV row {n + 1}, column {header[j]}: expected a number, got {rec[j][:40]!r}") from None
        rows.append(row)
    if not rows:
        raise BadInput("the CSV body has a header but no data rows")
    return rows


def _parse_json(body: bytes) -> tuple[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInput(f"the body must be a JSON object with exactly one of {', '.join(FORMATS)}; got {_type_name(doc)}")
    keys = [k for k in FORMATS if k in doc]
    other = [k for k in doc if k not in FORMATS and k != "params"]
    if len(keys) != 1 or other:
        found = ", ".join(doc.keys()) or "nothing"
        raise BadInput(f"the body must have exactly one of {', '.join(FORMATS)} (and optionally params); found {found}")
    return keys[0], doc[keys[0]]


def _predict(loaded: Loaded, frame: Any) -> Any:
    if loaded.fast is not None:
        return loaded.fast(frame)
    return loaded.model.predict(frame)


def _generic_frame(key: str, value: Any) -> Any:
    """Models without a numeric column signature: pandas does the parsing, pyfunc enforces the schema."""
    if key == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise BadInput("dataframe_split must be an object with columns and data")
        return pd.DataFrame(value["data"], columns=value.get("columns"))
    if key == "dataframe_records":
        return pd.DataFrame.from_records(value)
    if isinstance(value, dict):
        return pd.DataFrame({k: v if isinstance(v, list) else [v] for k, v in value.items()})
    return value if not isinstance(value, list) or not value or not isinstance(value[0], dict) else pd.DataFrame(value)


def _jsonable(pred: Any) -> Any:
    if isinstance(pred, np.ndarray):
        return pred
    if isinstance(pred, pd.DataFrame):
        return pred.to_dict(orient="records")
    if isinstance(pred, pd.Series):
        return pred.to_numpy()
    return pred


# --------------------------------------------------------------------- the app


def _json(payload: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


def _error(status: int, message: str) -> Response:
    if _registry is not None:
        REQUESTS.labels(str(status)).inc()
    return _json({"error_code": "BAD_REQUEST" if status == 400 else str(status), "message": message}, status)


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

    # The input is validated here (finite numbers); sklearn's own re-checks cost more than the model.
    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
    # An array in signature order (see _warm) carries no column names; the columns were checked here.
    warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
    holder.start()


@app.on_event("shutdown")
def _shutdown() -> None:
    holder.stop()


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadInput("Content-Length is not a number")
        if int(length) > MAX_BODY_BYTES:
            raise BadInput(f"the body is {int(length)} bytes; the limit is {MAX_BODY_BYTES}", 413)
        return await request.body()
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            raise BadInput(f"the body is over the limit of {MAX_BODY_BYTES} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


@app.post("/invocations")
async def invocations(request: Request) -> Response:
    started = time.perf_counter()
    loaded = holder.current  # read once: a swap during this request does not affect it
    try:
        ctype = request.headers.get("content-type", "")
        mime, _, params = ctype.partition(";")
        mime = mime.strip().lower()
        if mime not in JSON_TYPES and mime not in CSV_TYPES:
            raise BadInput(
                f"content type {ctype or '(none)'!r} is not supported; send application/json or text/csv", 415
            )
        charset = params.strip().lower()
        if charset and charset.replace(" ", "") not in ("charset=utf-8",):
            raise BadInput(f"content type parameter {params.strip()!r} is not supported; only charset=utf-8", 415)
        body = await _read_body(request)
        if not body.strip():
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
            return _error(503, f"no model loaded: {holder.last_error}")
        if mime in CSV_TYPES:
            if not loaded.dtypes:
                raise BadInput("CSV input needs a model with a numeric column signature; send JSON")
            frame = _frame(_parse_csv(body, loaded), loaded)
        else:
            key, value = _parse_json(body)
            if loaded.dtypes:
                if key == "dataframe_split":
                    rows = _rows_from_split(value, loaded)
                elif key == "dataframe_records":
                    rows = _rows_from_records(value, loaded, key)
                else:
                    rows = _rows_from_tensor_style(value, loaded, key)
                frame = _frame(rows, loaded)
            else:
                frame = _generic_frame(key, value)
        try:
            pred = _predict(loaded, frame)
        except Exception as exc:  # noqa: BLE001
            from mlflow.exceptions import MlflowException

            if isinstance(exc, MlflowException) and exc.get_http_status_code() == 400:
                raise BadInput(_short(exc)) from None
            log.exception("prediction failed")
            return _error(500, f"the model failed on valid input: {_short(exc)}")
    except BadInput as exc:
        return _error(exc.status, str(exc))
    except Exception as exc:  # noqa: BLE001 - a malformed value pandas or numpy refused
        if isinstance(exc, (ValueError, TypeError)):
            return _error(400, f"the input could not be read: {_short(exc)}")
        raise
    if _registry is not None:
        REQUESTS.labels("200").inc()
        ROWS.inc(len(frame))
        LATENCY.observe(time.perf_counter() - started)
    return _json({"predictions": _jsonable(pred)})


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
    return _json({"ready": True, "model": f"{MODEL_NAME} version {cur.version} (@{MODEL_ALIAS})"})


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
