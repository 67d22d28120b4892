"""
### iris_pipeline

Trains a small model grid on the iris data set (shipped with scikit-learn, no
network), logs every candidate to MLflow, registers the best model as a new
version of a registered model, and moves the alias ``champion`` to it only
when it is good enough and better than the current champion.

Tasks (TaskFlow, all data through XCom or MLflow, nothing on local disk):

``load_data`` → ``split_data`` → ``train`` → ``evaluate`` → ``register`` → ``promote``

* ``load_data``: ``sklearn.datasets.load_iris`` as lists (150 rows, small XCom).
* ``split_data``: stratified train/test split, ``test_size=0.3``, fixed
  ``random_state=42``: every run sees the same split.
* ``train``: one MLflow run per DAG run (experiment ``iris`` by default, created
  if missing), one nested run per candidate (LogisticRegression ``C`` in
  0.1/1/10, DecisionTree ``max_depth`` in 2/3/4, each behind a StandardScaler)
  scored by 5-fold CV accuracy on the training split; the best (ties: first in
  grid order) is refit on the whole training split and logged with
  ``mlflow.sklearn.log_model(name="model")``, a signature and an input example.
* ``evaluate``: loads that model back from MLflow and logs ``accuracy`` and
  ``f1_macro`` on the test split to the parent run.
* ``register``: registers the logged model as a version of the registered
  model (``iris`` by default). Idempotent: a task retry finds the version it
  already registered for this MLflow run instead of adding another.
* ``promote``: sets alias ``champion`` on the new version only when
  ``accuracy >= threshold`` **and** (there is no champion yet, or the current
  champion's run has no readable ``accuracy`` metric, or
  ``accuracy > champion accuracy``). A tie keeps the current champion: a rerun
  with the same data and seed registers a new version but does not move the
  alias. Every version gets tags ``accuracy``, ``promoted`` and
  ``promotion_reason``.

Reruns are safe: ``mlflow.set_experiment`` creates the experiment only once;
each DAG run gets its own MLflow run tagged ``airflow.dag_id``,
``airflow.dag_run_id`` and ``airflow.try_number``; ``max_active_runs=1`` keeps two
runs from racing over the alias.

Configuration the platform sets (first match wins):

* MLflow tracking URI:
  1. Airflow connection ``mlflow_default`` (conn type ``http``/``https``; host and
     port give ``http://host:port``; a host that already holds a URL is used as
     is; ``schema`` ``https`` selects TLS; login/password, if set, become
     MLflow basic-auth credentials). E.g. env
     ``AIRFLOW_CONN_MLFLOW_DEFAULT=http://127.0.0.1:5000``.
  2. Airflow Variable ``mlflow_tracking_uri`` (e.g. env
     ``AIRFLOW_VAR_MLFLOW_TRACKING_URI=http://127.0.0.1:5000``).
  3. Environment variable ``MLFLOW_TRACKING_URI`` of the worker.
  With none of them the tasks fail rather than write to a local file store.
* Accuracy threshold: DAG param ``accuracy_threshold`` (per run, via the run's
  conf), else Airflow Variable ``iris_accuracy_threshold``, else ``0.9``.
* Registered model name: DAG param ``registered_model``, else Airflow Variable
  ``iris_registered_model``, else ``iris``. Experiment: DAG param
  ``experiment``, else Variable ``iris_experiment``, else ``iris``.

Worker Python needs ``mlflow`` (3.x), ``scikit-learn`` and ``pandas``; they are
imported inside the tasks so that parsing this file stays fast.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

try:  # Airflow 3
    from airflow.sdk import BaseHook, Param, Variable, dag, get_current_context, task
except ImportError:  # Airflow 2.x layout
    from airflow.decorators import dag, task
    from airflow.hooks.base import BaseHook
    from airflow.models import Variable
    from airflow.models.param import Param
    from airflow.operators.python import get_current_context

DAG_ID = "iris_pipeline"
CONN_ID = "mlflow_default"
ALIAS = "champion"
METRIC = "accuracy"
SEED = 42
TEST_SIZE = 0.3
CV_FOLDS = 5
DEFAULT_THRESHOLD = 0.9
DEFAULT_MODEL = "iris"
DEFAULT_EXPERIMENT = "iris"
# Column names usable as JSON keys by a scoring client (no spaces or parentheses).
FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
# Candidate grid: (family, hyperparameter name, values). Ties in CV accuracy go to the first.
GRID: list[tuple[str, str, list[Any]]] = [
    ("logistic_regression", "C", [0.1, 1.0, 10.0]),
    ("decision_tree", "max_depth", [2, 3, 4]),
]


# --------------------------------------------------------------------------- helpers


def _variable(key: str, default: Any = None) -> Any:
    try:
        return Variable.get(key, default)
    except Exception:  # noqa: BLE001 - a missing variable is never fatal here
        return default


def _tracking_uri() -> tuple[str, str]:
    """The MLflow tracking URI and where it came from (connection, variable, env)."""
    try:
        conn = BaseHook.get_connection(CONN_ID)
    except Exception:  # noqa: BLE001 - AirflowNotFoundException (its module differs across versions)
        conn = None
    if conn is not None and conn.host:
        host = conn.host.strip().rstrip("/")
        if "://" in host:
            uri = host
        else:
            scheme = (conn.schema or "").lower()
            if scheme not in ("http", "https"):
                scheme = "https" if (conn.conn_type or "").lower() == "https" else "http"
            uri = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        if conn.login:
            os.environ["MLFLOW_TRACKING_USERNAME"] = conn.login
            os.environ["MLFLOW_TRACKING_PASSWORD"] = conn.password or ""
        return uri, f"connection {CONN_ID}"
    uri = _variable("mlflow_tracking_uri")
    if uri:
        return str(uri).strip(), "variable mlflow_tracking_uri"
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri.strip(), "env MLFLOW_TRACKING_URI"
    raise RuntimeError(
        f"no MLflow tracking URI: set Airflow connection {CONN_ID!r}, Airflow Variable "
        "'mlflow_tracking_uri' or env MLFLOW_TRACKING_URI"
    )


def _setting(params: dict[str, Any], param: str, variable: str, default: Any) -> Any:
    value = params.get(param)
    if value is None or value == "":
        value = _variable(variable, default)
    return default if value is None or value == "" else value


def _mlflow(params: dict[str, Any]):
    """Points MLflow at the tracking server; returns (mlflow module, experiment name)."""
    import mlflow

    uri, source = _tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment = str(_setting(params, "experiment", "iris_experiment", DEFAULT_EXPERIMENT))
    mlflow.set_experiment(experiment)  # creates it on first use, reuses it afterwards
    print(f"MLflow tracking URI {uri} (from {source}), experiment {experiment!r}")
    return mlflow, experiment


def _frame(rows: list[list[float]]):
    import pandas as pd

    return pd.DataFrame(rows, columns=FEATURES, dtype="float64")


def _estimator(family: str, value: Any):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    if family == "logistic_regression":
        clf = LogisticRegression(C=float(value), max_iter=1000, random_state=SEED)
    elif family == "decision_tree":
        clf = DecisionTreeClassifier(max_depth=int(value), random_state=SEED)
    else:
        raise ValueError(f"unknown model family {family}")
    return Pipeline([("scale", StandardScaler()), ("clf", clf)])


# --------------------------------------------------------------------------- DAG


@dag(
    dag_id=DAG_ID,
    description="Train, evaluate, register and (maybe) promote an iris classifier in MLflow",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["mlops", "iris"],
    doc_md=__doc__,
    default_args={
        "retries": 1,
        "retry_delay": timedelta(seconds=30),
        "execution_timeout": timedelta(minutes=15),
    },
    params={
        "accuracy_threshold": Param(
            None,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            description=f"Minimum test accuracy for {ALIAS}; empty: Variable iris_accuracy_threshold, else {DEFAULT_THRESHOLD}",
        ),
        "registered_model": Param(
            None,
            type=["null", "string"],
            description=f"Registered model name; empty: Variable iris_registered_model, else {DEFAULT_MODEL}",
        ),
        "experiment": Param(
            None,
            type=["null", "string"],
            description=f"MLflow experiment; empty: Variable iris_experiment, else {DEFAULT_EXPERIMENT}",
        ),
    },
)
def iris_pipeline():
    @task
    def load_data() -> dict[str, Any]:
        from sklearn.datasets import load_iris

        iris = load_iris()
        return {
            "X": iris.data.tolist(),
            "y": iris.target.tolist(),
            "target_names": iris.target_names.tolist(),
        }

    @task
    def split_data(data: dict[str, Any]) -> dict[str, Any]:
        from sklearn.model_selection import train_test_split

        X_train, X_test, y_train, y_test = train_test_split(
            data["X"], data["y"], test_size=TEST_SIZE, random_state=SEED, stratify=data["y"]
        )
        return {
            "X_train": X_train,
            "X_test": X_test,
            "y_train": y_train,
            "y_test": y_test,
            "target_names": data["target_names"],
        }

    @task
    def train(split: dict[str, Any]) -> dict[str, Any]:
        import numpy as np
        from mlflow.models import infer_signature
        from sklearn.model_selection import StratifiedKFold, cross_val_score

        ctx = get_current_context()
        params = ctx["params"]
        mlflow, experiment = _mlflow(params)
        dag_run_id = ctx["dag_run"].run_id
        ti = ctx["ti"]
        tags = {
            "airflow.dag_id": DAG_ID,
            "airflow.dag_run_id": dag_run_id,
            "airflow.try_number": str(ti.try_number),
        }
        X_train = _frame(split["X_train"])
        y_train = np.asarray(split["y_train"])
        cv = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=SEED)

        with mlflow.start_run(run_name=f"iris-{dag_run_id}", tags=tags) as run:
            mlflow.log_params(
                {
                    "seed": SEED,
                    "test_size": TEST_SIZE,
                    "cv_folds": CV_FOLDS,
                    "n_train": len(y_train),
                    "n_test": len(split["y_test"]),
                }
            )
            best: tuple[float, str, str, Any] | None = None
            for family, hp, values in GRID:
                for value in values:
                    scores = cross_val_score(_estimator(family, value), X_train, y_train, cv=cv, scoring="accuracy")
                    mean = float(scores.mean())
                    with mlflow.start_run(run_name=f"{family}-{hp}={value}", nested=True, tags=tags):
                        mlflow.log_params({"model_family": family, hp: value})
                        mlflow.log_metrics({"cv_accuracy": mean, "cv_accuracy_std": float(scores.std())})
                    print(f"candidate {family} {hp}={value}: cv accuracy {mean:.4f}")
                    if best is None or mean > best[0]:
                        best = (mean, family, hp, value)
            assert best is not None
            cv_acc, family, hp, value = best
            model = _estimator(family, value).fit(X_train, y_train)
            mlflow.log_params({"model_family": family, hp: value})
            mlflow.log_metric("cv_accuracy", cv_acc)
            example = X_train.head(5)
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=infer_signature(X_train, model.predict(X_train)),
                input_example=example,
            )
            print(f"best {family} {hp}={value} (cv accuracy {cv_acc:.4f}) logged as {info.model_uri}")
            return {
                "run_id": run.info.run_id,
                "experiment": experiment,
                "model_uri": info.model_uri,
                "family": family,
                "hyperparameter": {hp: value},
                "cv_accuracy": cv_acc,
            }

    @task
    def evaluate(split: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
        from sklearn.metrics import accuracy_score, f1_score

        ctx = get_current_context()
        mlflow, _ = _mlflow(ctx["params"])
        model = mlflow.sklearn.load_model(trained["model_uri"])
        y_test = split["y_test"]
        predicted = model.predict(_frame(split["X_test"]))
        metrics = {
            METRIC: float(accuracy_score(y_test, predicted)),
            "f1_macro": float(f1_score(y_test, predicted, average="macro")),
        }
        with mlflow.start_run(run_id=trained["run_id"]):
            mlflow.log_metrics(metrics)
        print(f"test split: {metrics}")
        return {**trained, **metrics}

    @task
    def register(evaluated: dict[str, Any]) -> dict[str, Any]:
        ctx = get_current_context()
        params = ctx["params"]
        mlflow, _ = _mlflow(params)
        client = mlflow.MlflowClient()
        name = str(_setting(params, "registered_model", "iris_registered_model", DEFAULT_MODEL))
        run_id = evaluated["run_id"]
        # A retry of this task must not add a second version for the same MLflow run.
        existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if existing:
            mv = max(existing, key=lambda v: int(v.version))
            print(f"version {mv.version} of {name} already registered for run {run_id}")
        else:
            mv = mlflow.register_model(
                evaluated["model_uri"],
                name,
                tags={"airflow.dag_run_id": ctx["dag_run"].run_id, METRIC: str(evaluated[METRIC])},
            )
            print(f"registered {evaluated['model_uri']} as {name} version {mv.version}")
        return {**evaluated, "registered_model": name, "version": str(mv.version)}

    @task
    def promote(registered: dict[str, Any]) -> dict[str, Any]:
        from mlflow.exceptions import MlflowException

        ctx = get_current_context()
        params = ctx["params"]
        mlflow, _ = _mlflow(params)
        client = mlflow.MlflowClient()
        name, version, accuracy = registered["registered_model"], registered["version"], registered[METRIC]
        threshold = float(_setting(params, "accuracy_threshold", "iris_accuracy_threshold", DEFAULT_THRESHOLD))

        champion_version: str | None = None
        champion_accuracy: float | None = None
        # An alias that does not exist is an error in MLflow (INVALID_PARAMETER_VALUE), so
        # look at the registered model's aliases first rather than parse error codes.
        if ALIAS in (client.get_registered_model(name).aliases or {}):
            current = client.get_model_version_by_alias(name, ALIAS)
            champion_version = str(current.version)
            if current.run_id:
                try:
                    champion_accuracy = client.get_run(current.run_id).data.metrics.get(METRIC)
                except MlflowException as err:  # the champion's run was deleted
                    print(f"cannot read the run of {ALIAS} v{champion_version}: {err}")

        if champion_version == version:
            promoted, reason = True, f"version {version} already holds @{ALIAS}"
        elif accuracy < threshold:
            promoted, reason = False, f"accuracy {accuracy:.4f} < threshold {threshold:.4f}"
        elif champion_version is None:
            promoted, reason = True, f"no {ALIAS} yet; accuracy {accuracy:.4f} >= threshold {threshold:.4f}"
        elif champion_accuracy is None:
            promoted, reason = True, f"{ALIAS} v{champion_version} has no {METRIC} metric; accuracy {accuracy:.4f} >= threshold"
        elif accuracy > champion_accuracy:
            promoted, reason = True, f"accuracy {accuracy:.4f} beats {ALIAS} v{champion_version} ({champion_accuracy:.4f})"
        else:  # a tie keeps the incumbent
            promoted, reason = False, f"accuracy {accuracy:.4f} does not beat {ALIAS} v{champion_version} ({champion_accuracy:.4f})"

        if promoted and champion_version != version:
            client.set_registered_model_alias(name, ALIAS, version)
        client.set_model_version_tag(name, version, "promoted", str(promoted).lower())
        client.set_model_version_tag(name, version, "promotion_reason", reason)
        print(f"{name} v{version}: {'promoted to' if promoted else 'not promoted to'} @{ALIAS}: {reason}")
        return {
            "registered_model": name,
            "version": version,
            "run_id": registered["run_id"],
            "accuracy": accuracy,
            "threshold": threshold,
            "promoted": promoted,
            "champion_version": version if promoted else champion_version,
            "previous_champion_version": champion_version,
            "previous_champion_accuracy": champion_accuracy,
            "reason": reason,
        }

    split = split_data(load_data())
    promote(register(evaluate(split, train(split))))


dag = iris_pipeline()
