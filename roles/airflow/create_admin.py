"""Create the Airflow admin user, or reset its password to the agent's.

Run by mlops-agent after `airflow db migrate`. Reads the user name and the
generated password from MLOPS_AIRFLOW_ADMIN_USER / MLOPS_AIRFLOW_ADMIN_PASSWORD
(the role's 0600 environment file), never from argv. Idempotent.
"""
import os
import sys

from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

user = os.environ.get("MLOPS_AIRFLOW_ADMIN_USER", "admin")
password = os.environ.get("MLOPS_AIRFLOW_ADMIN_PASSWORD")
if not password:
    sys.exit("MLOPS_AIRFLOW_ADMIN_PASSWORD is not set")

with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    existing = sm.find_user(username=user)
    if existing is None:
        role = sm.find_role("Admin")
        if role is None:
            sm.sync_roles()
            role = sm.find_role("Admin")
        created = sm.add_user(user, "Admin", "User", f"{user}@localhost", role, password)
        if not created:
            sys.exit(f"could not create Airflow user {user}")
        print(f"created Airflow admin user {user}")
    else:
        sm.reset_password(existing.id, password)
        print(f"Airflow admin user {user} exists; password set to the agent's")
