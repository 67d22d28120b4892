"""Bring the MLflow backend store schema to the installed MLflow's head.

Run by mlops-agent when the installed MLflow version or its environment changes. Reads the
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

# With the basic-auth app (MLFLOW_AUTH_CONFIG_PATH set), its own database too:
# migrated here, before the server starts, rather than by each worker at once.
#
# On MySQL and MariaDB, MLflow's first auth migration (8606fa83a998) names the
# foreign keys of two tables `fk_user_id`, and foreign key names are unique per
# schema there, so it fails half way (mlflow/mlflow#9642, #10964, still open).
# Here the second one is named `fk_rm_perm_user_id` while the migrations run;
# no later migration refers to either name. Tables left empty by such a
# half-done first run (no version in alembic_version_auth) are dropped first.
if os.environ.get("MLFLOW_AUTH_CONFIG_PATH"):
    import sqlalchemy as sa
    from mlflow.server.auth.config import read_auth_config
    from mlflow.server.auth.db.utils import migrate_if_needed

    auth_engine = create_sqlalchemy_engine_with_retry(read_auth_config().database_uri)
    try:
        if auth_engine.dialect.name == "mysql":
            inspector = sa.inspect(auth_engine)
            tables = set(inspector.get_table_names())
            if "users" in tables:
                with auth_engine.begin() as conn:
                    versioned = "alembic_version_auth" in tables and conn.execute(sa.text("SELECT COUNT(*) FROM alembic_version_auth")).scalar() > 0
                    if not versioned and conn.execute(sa.text("SELECT COUNT(*) FROM users")).scalar() == 0:
                        for t in ("registered_model_permissions", "experiment_permissions", "users"):
                            conn.execute(sa.text(f"DROP TABLE IF EXISTS {t}"))
            original_init = sa.ForeignKeyConstraint.__init__
            named = set()

            def unique_fk_names(self, *args, name=None, **kwargs):
                if name == "fk_user_id":
                    if name in named:
                        name = "fk_rm_perm_user_id"
                    named.add("fk_user_id")
                original_init(self, *args, name=name, **kwargs)

            sa.ForeignKeyConstraint.__init__ = unique_fk_names
            try:
                migrate_if_needed(auth_engine, "head")
            finally:
                sa.ForeignKeyConstraint.__init__ = original_init
        else:
            migrate_if_needed(auth_engine, "head")
    finally:
        auth_engine.dispose()
    print("mlflow auth database schema is at head")
