"""Bring the MLflow backend store schema to the installed MLflow's head.

Run by mlops-agent when the installed MLflow version changes. Reads the
store URI from MLFLOW_BACKEND_STORE_URI (never argv, so the password does not
show in the process list) and does what `mlflow db upgrade URI` does.
"""
import os
import sys

import sqlalchemy
from mlflow.store.db.utils import _initialize_tables, _upgrade_db, create_sqlalchemy_engine_with_retry

uri = os.environ.get("MLFLOW_BACKEND_STORE_URI")
if not uri:
    sys.exit("MLFLOW_BACKEND_STORE_URI is not set")
engine = create_sqlalchemy_engine_with_retry(uri)
if sqlalchemy.inspect(engine).get_table_names():
    _upgrade_db(engine)
else:
    # A fresh database: create the base tables, then run every migration.
    _initialize_tables(engine)
print("mlflow backend store schema is at head")
