"""MLflow basic auth, plus a grace period for rotated passwords.

Installed by mlops-agent as MLflow's `authorization_function`. A request is
let in when MLflow's own basic-auth check accepts it. When that check fails,
the request is let in too if its password is the user's *previous* one and
the agent changed that password less than `rotationGraceSeconds` ago: the
agent on this VM sets a new password as soon as Vault has it, the other VMs'
agents pick it up on their next converge, and no request in between is
refused. The grace file (MLOPS_MLFLOW_AUTH_GRACE_FILE, 0600, written by the
agent) holds only salted PBKDF2 hashes and their deadlines, never a password.
"""
import hashlib
import hmac
import json
import os
import time

from flask import request
from werkzeug.datastructures import Authorization

from mlflow.server.auth import authenticate_request_basic_auth

_GRACE_FILE = os.environ.get("MLOPS_MLFLOW_AUTH_GRACE_FILE", "")


def _previous_password_ok(username: str, password: str) -> bool:
    if not _GRACE_FILE:
        return False
    try:
        with open(_GRACE_FILE, encoding="utf-8") as f:
            entry = json.load(f).get(username)
    except (OSError, ValueError, AttributeError):
        return False
    if not isinstance(entry, dict) or float(entry.get("until", 0)) < time.time():
        return False
    try:
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(entry["salt"]), int(entry["iterations"]))
        return hmac.compare_digest(digest.hex(), entry["hash"])
    except (KeyError, ValueError, TypeError):
        return False


def authenticate():
    result = authenticate_request_basic_auth()
    if isinstance(result, Authorization):
        return result
    auth = request.authorization
    if auth is not None and auth.username and auth.password and _previous_password_ok(auth.username, auth.password):
        return auth
    return result
