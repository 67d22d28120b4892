"""Bring the MLflow backend store schema to the installed MLflow's head.

Run by mlops-agent when the installed MLflow version changes. Reads the
store URI from MLFLOW_BACKEND_STORE_URI (never argv, so the password does not
show in the process list) and does what `mlflow db upgrade URI` does.
"""
import os
import sys

from mlflow.store.db.utils import _initialize_tables, _is_empty_database, _upgrade_db, create_sqlalchemy_engine_with_retry

uri = os.environ.get("MLFLOW_BACKEND_STORE_URI")
if not uri:
    sys.exit("MLFLOW_BACKEND_STORE_URI is not set")
engine = create_sqlalchemy_engine_with_retry(uri)
try:
    if _is_empty_database(engine):
        # A fresh database (or one holding only alembic_version after a failed
        # first setup): create the base tables, then run every migration.
        _initialize_tables(engine)
    else:
        _upgrade_db(engine)
finally:
    engine.dispose()
print("mlflow backend store schema is at head")
