"""
mlops dashboard: the model being served, a prediction form, batch predictions
from a CSV, and the accuracy of every registered version.

Reads from the prediction API (MLOPS_DASHBOARD_API_URL) and MLflow's REST API
(MLFLOW_TRACKING_URI) only. Calls the API with its own key when the agent gave
it one (MLOPS_DASHBOARD_API_KEY, as `Authorization: Bearer`), and MLflow with
basic auth when MLFLOW_TRACKING_USERNAME/_PASSWORD are set; all three come from
the serving role's 0600 env file.
"""

from __future__ import annotations

import io
import os

import pandas as pd
import requests
import streamlit as st

API = os.environ.get("MLOPS_DASHBOARD_API_URL", "http://127.0.0.1:8000").rstrip("/")
MLFLOW = os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000").rstrip("/")
MODEL = os.environ.get("MLOPS_SERVING_MODEL_NAME", "iris")
ALIAS = os.environ.get("MLOPS_SERVING_MODEL_ALIAS", "champion")
FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
SPECIES = {0: "setosa", 1: "versicolor", 2: "virginica"}
TIMEOUT = 10


def api_headers() -> dict[str, str]:
    """The dashboard's own key for the prediction API, if the API wants keys."""
    key = os.environ.get("MLOPS_DASHBOARD_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def mlflow_auth() -> tuple[str, str] | None:
    """MLflow basic auth, as the MLflow client reads it from the environment."""
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    return (user, password) if user and password else None


st.set_page_config(page_title="mlops dashboard", layout="wide")


def species(p: object) -> str:
    try:
        return SPECIES.get(int(p), str(p))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(p)


def predict(columns: list[str], rows: list[list[float]]) -> tuple[list | None, str | None]:
    """POST /invocations; returns (predictions, error message)."""
    try:
        r = requests.post(
            f"{API}/invocations",
            json={"dataframe_split": {"columns": columns, "data": rows}},
            headers=api_headers(),
            timeout=TIMEOUT,
        )
    except requests.RequestException as exc:
        return None, f"the prediction API at {API} did not answer: {exc}"
    try:
        body = r.json()
    except ValueError:
        return None, f"the prediction API answered {r.status_code} with a body that is not JSON"
    if r.status_code != 200:
        return None, f"{r.status_code}: {body.get('message', body)}"
    return body["predictions"], None


@st.cache_data(ttl=5, show_spinner=False)
def served_model() -> tuple[dict | None, str | None]:
    try:
        r = requests.get(f"{API}/models", headers=api_headers(), timeout=TIMEOUT)
        body = r.json()
    except (requests.RequestException, ValueError) as exc:
        return None, f"the prediction API at {API} did not answer: {exc}"
    if r.status_code != 200:
        return None, f"the prediction API answered {r.status_code}: {body.get('message', body)}"
    models = body.get("models") or []
    if not models:
        return None, f"no model loaded yet: {body.get('lastError')}"
    return models[0], None


def forbidden(exc: requests.HTTPError) -> bool:
    """MLflow refused the read: a serving user may read the registered model and not its runs."""
    return exc.response is not None and exc.response.status_code in (401, 403)


@st.cache_data(ttl=5, show_spinner=False)
def run_metrics(run_id: str) -> dict[str, float]:
    r = requests.get(f"{MLFLOW}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, auth=mlflow_auth(), timeout=TIMEOUT)
    r.raise_for_status()
    return {m["key"]: m["value"] for m in r.json()["run"]["data"].get("metrics", [])}


@st.cache_data(ttl=5, show_spinner=False)
def versions() -> pd.DataFrame:
    r = requests.get(
        f"{MLFLOW}/api/2.0/mlflow/model-versions/search",
        params={"filter": f"name='{MODEL}'", "max_results": 200},
        auth=mlflow_auth(),
        timeout=TIMEOUT,
    )
    r.raise_for_status()
    rows = []
    for v in r.json().get("model_versions", []):
        acc = None
        tags = {t["key"]: t["value"] for t in v.get("tags", [])}
        if "accuracy" in tags:
            acc = float(tags["accuracy"])
        elif v.get("run_id"):
            try:
                acc = run_metrics(v["run_id"]).get("accuracy")
            except requests.HTTPError as exc:
                if not forbidden(exc):
                    raise
        rows.append(
            {
                "version": int(v["version"]),
                "accuracy": acc,
                "aliases": ", ".join(v.get("aliases", [])),
                "run_id": v.get("run_id"),
            }
        )
    return pd.DataFrame(rows, columns=["version", "accuracy", "aliases", "run_id"]).sort_values("version")


st.title("mlops dashboard")

# ----------------------------------------------------------- the served model
model, err = served_model()
st.header(f"Served model: {MODEL}@{ALIAS}")
if model is None:
    st.warning(err)
else:
    c1, c2, c3 = st.columns(3)
    c1.metric("version", model["version"])
    c2.metric("alias", model["alias"])
    c3.metric("loaded at (UTC)", model["loadedAt"].replace("T", " ").replace("+00:00", ""))
    if model.get("runId"):
        try:
            metrics = run_metrics(model["runId"])
            if metrics:
                cols = st.columns(max(1, len(metrics)))
                for col, (k, v) in zip(cols, sorted(metrics.items())):
                    col.metric(k, f"{v:.4f}")
            st.caption(f"MLflow run {model['runId']}")
        except requests.HTTPError as exc:
            if not forbidden(exc):
                st.warning(f"MLflow at {MLFLOW} did not answer: {exc}")
            else:
                st.caption(f"MLflow run {model['runId']} (its metrics are not readable by this dashboard's MLflow user)")
        except requests.RequestException as exc:
            st.warning(f"MLflow at {MLFLOW} did not answer: {exc}")

# ------------------------------------------------------------- one prediction
st.header("Predict one flower")
with st.form("predict"):
    cols = st.columns(4)
    defaults = [5.1, 3.5, 1.4, 0.2]
    values = [
        col.number_input(name, min_value=0.0, max_value=20.0, value=d, step=0.1, format="%.1f")
        for col, name, d in zip(cols, FEATURES, defaults)
    ]
    submitted = st.form_submit_button("Predict")
if submitted:
    preds, err = predict(FEATURES, [[float(v) for v in values]])
    if err:
        st.error(err)
    else:
        st.success(f"Prediction: {species(preds[0])} (class {preds[0]})")

# ---------------------------------------------------------- batch from a CSV
st.header("Batch predictions from a CSV")
st.caption(f"A header row with the columns {', '.join(FEATURES)}, then one row per flower.")
upload = st.file_uploader("CSV file", type=["csv"])
if upload is not None:
    try:
        frame = pd.read_csv(upload)
    except Exception as exc:  # noqa: BLE001 - shown to the person
        st.error(f"could not read the CSV: {exc}")
        frame = None
    if frame is not None:
        preds, err = predict([str(c) for c in frame.columns], frame.values.tolist())
        if err:
            st.error(err)
        else:
            out = frame.copy()
            out["prediction"] = preds
            out["species"] = [species(p) for p in preds]
            st.write(f"{len(out)} predictions")
            st.dataframe(out, width="stretch")
            buf = io.StringIO()
            out.to_csv(buf, index=False)
            st.download_button("Download predictions (CSV)", buf.getvalue(), "predictions.csv", "text/csv")

# -------------------------------------------------- accuracy of every version
st.header("Registered versions")
try:
    table = versions()
    if table.empty:
        st.info(f"no versions of {MODEL} are registered yet")
    else:
        chart = table.dropna(subset=["accuracy"]).assign(version=lambda t: t["version"].astype(str))
        if not chart.empty:
            st.bar_chart(chart, x="version", y="accuracy")
        st.dataframe(table, width="stretch", hide_index=True)
except requests.RequestException as exc:
    st.warning(f"MLflow at {MLFLOW} did not answer: {exc}")
