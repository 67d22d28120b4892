"""Bring the MLflow backend store schema to the installed MLflow's head.

Run by mlops-agent when the installed MLflow version or its environment changes. Reads the
store URI from MLFLOW_BACKEND_STORE_URI (never argv, so the password does not
show in the process list) and does what `mlflow db upgrade URI` does.

Several MLflow servers (replicas) share one MySQL database, and their agents may
migrate at the same moment. On MySQL the whole script runs under a named lock
(GET_LOCK, server-wide, released when its connection ends however the process
dies): the first one migrates, the others wait for it and then find the schemas at
head and change nothing. MLOPS_DB_UPGRADE_LOCK_TIMEOUT (seconds, default 600) bounds
the wait; past it the script exits 3 naming the lock and who holds it, and the agent
retries on a later pass.
"""
import hashlib
import os
import sys
import time

import sqlalchemy as sa
from mlflow.store.db.utils import _initialize_tables, _is_empty_database, _upgrade_db, create_sqlalchemy_engine_with_retry

uri = os.environ.get("MLFLOW_BACKEND_STORE_URI")
if not uri:
    sys.exit("MLFLOW_BACKEND_STORE_URI is not set")
engine = create_sqlalchemy_engine_with_retry(uri)


def lock_name(database: str) -> str:
    """One lock per backend database; MySQL allows 64 characters."""
    name = f"mlops-agent:mlflow-db-upgrade:{database}"
    return name if len(name) <= 64 else f"mlops-agent:mlflow-db-upgrade:{hashlib.sha256(database.encode()).hexdigest()[:32]}"


def take_lock(conn, name: str, timeout: int) -> None:
    holder = conn.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar()
    if holder is not None:
        print(f"another MLflow server is migrating (MySQL lock {name!r} held by connection {holder}); waiting up to {timeout} s", flush=True)
    started = time.monotonic()
    got = conn.execute(sa.text("SELECT GET_LOCK(:n, :t)"), {"n": name, "t": timeout}).scalar()
    if got != 1:
        holder = conn.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar()
        print(
            f"waited {time.monotonic() - started:.0f} s for MySQL lock {name!r}, which another MLflow server's schema migration holds "
            f"(connection {holder}; see information_schema.PROCESSLIST); not migrating now, the agent retries on a later pass "
            "(MLOPS_DB_UPGRADE_LOCK_TIMEOUT sets the wait)",
            file=sys.stderr,
        )
        sys.exit(3)
    if holder is not None:
        print(f"lock {name!r} taken after {time.monotonic() - started:.1f} s", flush=True)


def upgrade_backend_store() -> None:
    if _is_empty_database(engine):
        # A fresh database (or one holding only alembic_version after a failed
        # first setup): create the base tables, then run every migration.
        _initialize_tables(engine)
    else:
        _upgrade_db(engine)
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
def upgrade_auth_database() -> None:
    if not os.environ.get("MLFLOW_AUTH_CONFIG_PATH"):
        return
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


lock_conn = None
try:
    if engine.dialect.name == "mysql":
        lock_conn = engine.connect()
        take_lock(lock_conn, lock_name(engine.url.database or ""), int(os.environ.get("MLOPS_DB_UPGRADE_LOCK_TIMEOUT", "600")))
    upgrade_backend_store()
    upgrade_auth_database()
finally:
    if lock_conn is not None:
        # Closing the session releases the lock too; RELEASE_LOCK says so plainly.
        try:
            lock_conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": lock_name(engine.url.database or "")})
        finally:
            lock_conn.close()
    engine.dispose()
