"""
The requests of the prediction API (serving_app.py), read the way MLflow's
scoring server reads them.

The fast path reads the common inputs of a model with a numeric column signature
(JSON in MLflow's four formats, CSV with a header) straight into a float64 array in
signature order. It may refuse anything it is not sure of: a refusal (BadInput) is
then tried once more by MLflow's own scoring function (`mlflow_answer`), so whatever
`mlflow models serve` predicts, the API predicts too, and whatever MLflow refuses is
refused with the fast path's message, which names the row and column. The fast path
must never accept an input MLflow refuses (test/integration/serving-compat.test.ts).

`loaded` below is serving_app.Loaded: columns, dtypes, array_ok, model, schema.
(No double braces in this file: the agent renders it as a template.)
"""

from __future__ import annotations

import csv
import io
import itertools
from typing import Any

import numpy as np
import orjson
import pandas as pd

FORMATS = ("dataframe_split", "dataframe_records", "inputs", "instances")
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
PARQUET_TYPE = "application/vnd.apache.parquet"
MEDIA_TYPES = (JSON_TYPE, CSV_TYPE, PARQUET_TYPE)
# What a JSON number becomes (orjson); bool is a subclass of int, so types are compared exactly.
NUMBER_TYPES = frozenset({float, int})


class BadInput(Exception):
    """A client's mistake: answered with this status and message."""

    def __init__(self, message: str, status: int = 400, final: bool = False):
        super().__init__(message)
        self.status = status
        # final: answered as is; MLflow's own parser is not tried (a stricter answer on purpose).
        self.final = final


def short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]



def content_type(ctype: str | None) -> str:
    """
    The media type of a request, by MLflow's rules (the type exactly as MLflow spells
    it, a charset of utf-8 only, no other parameter), with a 415 that says what is
    allowed. MLflow answers a request without Content-Type with a 500; this is a 415.
    """
    allowed = ", ".join(MEDIA_TYPES)
    if ctype is None:
        raise BadInput(f"the request has no Content-Type; send one of {allowed}", 415)
    parts = [p.strip() for p in ctype.split(";")]
    params = {k: v for k, _, v in (p.partition("=") for p in parts[1:])}
    if params.get("charset", "utf-8").lower() != "utf-8":
        raise BadInput(f"content type {ctype!r}: only charset=utf-8 is supported", 415)
    unknown = set(params) - {"charset"}
    if unknown:
        names = ", ".join(sorted(repr(k) for k in unknown))
        raise BadInput(f"content type {ctype!r}: parameter(s) {names} not supported; only charset=utf-8", 415)
    if parts[0] not in MEDIA_TYPES:
        raise BadInput(f"content type {parts[0]!r} is not supported; send one of {allowed} (in lower case)", 415)
    return parts[0]


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


def _check_columns(got: list[str], loaded: Any, where: str) -> None:
    """Every signature column present once; other columns are ignored (as MLflow ignores them)."""
    expected = loaded.columns or []
    if len(set(got)) != len(got):
        dup = sorted({c for c in got if got.count(c) > 1})
        raise BadInput(f"{where}: duplicate column(s) {', '.join(dup)}")
    missing = [c for c in expected if c not in got]
    if missing:
        extra = [c for c in got if c not in expected]
        unused = f"; unexpected column(s) {', '.join(extra)} (ignored)" if extra else ""
        raise BadInput(
            f"missing column(s) {', '.join(missing)} in {where}{unused}; the model expects {', '.join(expected)}"
        )


def _rows_from_records(records: Any, loaded: Any, where: str) -> list[list[Any]]:
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


def _rows_from_split(split: Any, loaded: Any) -> list[list[Any]]:
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
    index = split.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise BadInput(f"dataframe_split.index must be a list of {len(data)} labels, one per row")
    cols = loaded.columns or []
    if columns != cols:
        _check_columns(columns, loaded, "dataframe_split.columns")
    n = len(columns)
    for i, row in enumerate(data):
        if type(row) is not list or len(row) != n:
            what = f"{len(row)} values" if isinstance(row, list) else _type_name(row)
            raise BadInput(f"dataframe_split.data[{i}] must be a list of {n} values (one per column), got {what}")
    if columns == cols:
        return data
    order = [columns.index(c) for c in cols]
    return [[row[j] for j in order] for row in data]


def _rows_from_tensor_style(value: Any, loaded: Any, key: str) -> list[list[Any]]:
    """`inputs` / `instances` for a model with named columns: records, or columns {column: [values]}."""
    cols = loaded.columns or []
    if isinstance(value, dict):
        _check_columns(list(value.keys()), loaded, key)
        values = list(value.values())
        if all(not isinstance(v, (list, dict)) for v in values):
            return [[value[c] for c in cols]]  # one instance: {column: value}
        if not all(type(v) is list for v in values):
            raise BadInput(f"{key}: give every column a list of values, or every column one value")
        n = len(values[0])
        if n == 0:
            raise BadInput(f"{key} is empty: send at least one row")
        if any(len(v) != n for v in values):
            raise BadInput(f"{key}: every column needs the same number of values")
        return [list(r) for r in zip(*(value[c] for c in cols))]
    if isinstance(value, list):
        if not value:
            raise BadInput(f"{key} is empty: send at least one row")
        if all(isinstance(r, dict) for r in value):
            return _rows_from_records(value, loaded, key)
        # MLflow turns a list of rows into an array, which a signature of named columns refuses.
        # (No double braces in this file: the agent renders it as a template.)
        example = "[" + "{" + ", ".join(f'"{c}": ...' for c in cols[:2]) + ", ...}]"
        columnar = "{" + '"<column>": [values], ...' + "}"
        raise BadInput(
            f"{key} as rows of values needs a model with a tensor signature; this model takes named columns "
            f"({', '.join(cols)}): send {key} as a list of objects {example}, as columns {columnar}, "
            "or use dataframe_split"
        )
    raise BadInput(f"{key} must be a list of objects (one per row) or an object of columns, got {_type_name(value)}")


def _array(rows: list[list[Any]], loaded: Any) -> np.ndarray:
    """Checks every value is a JSON number (not a boolean) and finite; the float64 array of the rows."""
    cols = loaded.columns or []
    # The types of all values in one pass at C speed; the row-by-row search only to name a bad one.
    if not set(map(type, itertools.chain.from_iterable(rows))) <= NUMBER_TYPES:
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                if type(v) in NUMBER_TYPES:
                    continue
                col = cols[j]
                kind = "an integer" if loaded.dtypes[col] in (np.int64, np.int32) else "a number"
                raise BadInput(f"row {i}, column {col}: expected {kind}, got {_type_name(v)}")
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except OverflowError:
        raise BadInput("a number is too large for a 64-bit float") from None
    if not np.isfinite(arr).all():
        i, j = (int(x[0]) for x in np.nonzero(~np.isfinite(arr)))
        raise BadInput(f"row {i}, column {cols[j]}: expected a finite number, got {arr[i, j]}")
    return arr


def model_input(arr: np.ndarray, loaded: Any) -> Any:
    """What the flavor's predict gets: the array itself (see _warm) or a frame of the signature's dtypes."""
    if loaded.array_ok:
        return arr
    cols = loaded.columns or []
    df = pd.DataFrame(arr, columns=cols, copy=False)
    for col, dt in loaded.dtypes.items():
        if dt is np.float64:
            continue
        if dt in (np.int64, np.int32):
            bad = np.flatnonzero(arr[:, cols.index(col)] % 1 != 0)
            if bad.size:
                raise BadInput(f"row {int(bad[0])}, column {col}: expected an integer, got a fraction")
        df[col] = df[col].astype(dt)
    return df


def _parse_csv(body: bytes, loaded: Any) -> np.ndarray:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("the CSV body is not UTF-8") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise BadInput("the CSV body is empty: send a header row and at least one data row", final=True)
    _check_columns(header, loaded, "the CSV header")
    idx = [header.index(c) for c in loaded.columns or []]
    rows = []
    for n, rec in enumerate(reader):
        if not rec:
            continue
        if len(rec) != len(header):
            # pandas reads a row longer than the header by taking its first field as the row's
            # label: MLflow then predicts on shifted values. Refused here (README, "Drop-in").
            more = " (mlflow models serve would take the first field as the row's label and predict on the rest)"
            raise BadInput(
                f"CSV row {n + 1} has {len(rec)} fields, the header has {len(header)}{more if len(rec) > len(header) else ''}",
                final=len(rec) > len(header),
            )
        row = []
        for j in idx:
            field = rec[j]
            try:
                if not field.isascii() or "_" in field:
                    raise ValueError(field)  # float() reads "1_0" and non-ASCII digits; pandas does not
                row.append(float(field))
            except ValueError:
                raise BadInput(f"CSV row {n + 1}, column {header[j]}: expected a number, got {field[:40]!r}") from None
        rows.append(row)
    if not rows:
        raise BadInput("the CSV body has a header but no data rows")
    arr = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(arr).all():
        i, j = (int(x[0]) for x in np.nonzero(~np.isfinite(arr)))
        raise BadInput(f"CSV row {i + 1}, column {(loaded.columns or [])[j]}: expected a finite number, got {arr[i, j]}")
    return arr


def _parse_json(body: bytes) -> tuple[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "UTF-8" in str(exc):
            raise BadInput("the body is not valid UTF-8 (JSON must be)") from None
        hint = "; NaN and Infinity are not JSON numbers (the model needs finite numbers)" if b"NaN" in body or b"Infinity" in body else ""
        raise BadInput(f"the body is not valid JSON: {exc}{hint}") from None
    if not isinstance(doc, dict):
        raise BadInput(f"the body must be a JSON object with exactly one of {', '.join(FORMATS)}; got {_type_name(doc)}")
    keys = [k for k in FORMATS if k in doc]
    if len(keys) != 1:
        found = ", ".join(doc.keys()) or "nothing"
        raise BadInput(f"the body must have exactly one of {', '.join(FORMATS)} (and optionally params); found {found}")
    return keys[0], doc[keys[0]]


def fast_input(mime: str, body: bytes, loaded: Any) -> np.ndarray:
    """The request's rows as a float64 array in signature order, or BadInput."""
    if mime == CSV_TYPE:
        return _parse_csv(body, loaded)
    key, value = _parse_json(body)
    if key == "dataframe_split":
        rows = _rows_from_split(value, loaded)
    elif key == "dataframe_records":
        rows = _rows_from_records(value, loaded, key)
    else:
        rows = _rows_from_tensor_style(value, loaded, key)
    return _array(rows, loaded)


def mlflow_answer(body: bytes, ctype: str, loaded: Any) -> tuple[int, bytes, str]:
    """
    MLflow's own scoring function (what `mlflow models serve` runs for a request): its
    parsing, schema enforcement and pyfunc predict, with scikit-learn's own checks on
    (the fast path turns them off). Runs in a thread. Returns status, body, message:
    the body is MLflow's JSON for a 200, the message its reason otherwise.
    """
    import sklearn
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        with sklearn.config_context(assume_finite=False):
            res = scoring_server.invocations(body, ctype, loaded.model, loaded.schema)
    except MlflowException as exc:
        return exc.get_http_status_code(), b"", short(exc)
    except Exception as exc:  # noqa: BLE001 - MLflow answers these with a 400 too
        return 400, b"", short(exc)
    if res.status == 200:
        return 200, res.response.encode(), ""
    return res.status, b"", str(res.response).strip().splitlines()[0][:300]
