"""MLflow basic auth, plus a grace period for rotated passwords, shared by every MLflow server.

Installed by mlops-agent as MLflow's `authorization_function`. A request is
let in when MLflow's own basic-auth check accepts it. When that check fails,
the request is let in too if its password is one the user had until a
rotation less than the grace period ago.

The grace lives in the auth database, next to MLflow's own `users` table
(table `mlops_password_grace`: user name, the salted hash MLflow kept of the
previous password, a deadline; never a password). Every MLflow server behind
the load balancer reads the same rows, so whichever server's agent sets a new
password, every server keeps accepting the previous one for the grace period,
and a client spread over all of them sees no refused request while the agents
of the other VMs (and its own) catch up with the new value.

A row is written here, not by the agent: when an admin (authenticated by
MLflow's own check) changes a password with `PATCH .../users/update-password`
and the header `X-MLOps-Grace-Seconds: N`, the user's current hash is copied
with a deadline N seconds ahead, before MLflow replaces it. If that copy
fails, the request is answered 503 and the password stays as it was (the
agent tries again). A person changing a password without the header (a leaked
one, say) gets no grace: the old password stops working at once.

`X-MLOps-Exact-Password: 1` asks for MLflow's own check only (the agent uses
it to tell whether a password is really the one in force).
"""
import logging
import math
import time

import sqlalchemy as sa
from flask import Response, g, jsonify, request
from werkzeug.datastructures import Authorization
from werkzeug.security import check_password_hash

from mlflow.server.auth import authenticate_request_basic_auth, store

_log = logging.getLogger(__name__)

GRACE_HEADER = "X-MLOps-Grace-Seconds"
EXACT_HEADER = "X-MLOps-Exact-Password"
MAX_GRACE_SECONDS = 86_400

_metadata = sa.MetaData()
_grace = sa.Table(
    "mlops_password_grace",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(255), nullable=False, index=True),
    # MLflow's own salted hash of the previous password (werkzeug format), copied from `users`.
    sa.Column("password_hash", sa.String(255), nullable=False),
    # Epoch seconds, whole (MySQL's FLOAT would round them by a minute); every server
    # compares with its own clock (NTP keeps them together).
    sa.Column("valid_until", sa.BigInteger, nullable=False),
)


def _previous_password_ok(username: str, password: str) -> bool:
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(_grace.c.password_hash).where(_grace.c.username == username, _grace.c.valid_until > time.time())
            ).all()
    except sa.exc.SQLAlchemyError:
        # No table yet (no rotation so far): nothing to accept.
        return False
    return any(check_password_hash(h, password) for (h,) in rows)


def _is_rotation_with_grace() -> bool:
    return request.method == "PATCH" and request.path.endswith("/mlflow/users/update-password") and GRACE_HEADER in request.headers


def _record_grace(requester: str) -> Response | None:
    """Keeps the target user's current password valid for the grace period. None: done (or nothing to do)."""
    try:
        seconds = float(request.headers.get(GRACE_HEADER, ""))
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_GRACE_SECONDS:
        return _refuse(400, f"{GRACE_HEADER} must be a number of seconds from 0 to {MAX_GRACE_SECONDS}")
    body = request.get_json(silent=True) or {}
    target = body.get("username") if isinstance(body, dict) else None
    if not isinstance(target, str) or not target or seconds == 0:
        return None
    try:
        if not store.get_user(requester).is_admin:
            return None
        now = time.time()
        try:
            _grace.create(store.engine, checkfirst=True)
        except sa.exc.SQLAlchemyError:
            # Another server created it at the same moment.
            _grace.create(store.engine, checkfirst=True)
        with store.engine.begin() as conn:
            current = conn.execute(sa.text("SELECT password_hash FROM users WHERE username = :u"), {"u": target}).scalar()
            if current is None:
                return None
            conn.execute(_grace.delete().where(_grace.c.valid_until <= now))
            conn.execute(_grace.insert().values(username=target, password_hash=current, valid_until=math.ceil(now + seconds)))
    except Exception as e:  # noqa: BLE001 - any failure keeps the password unchanged
        _log.warning("could not record the grace period of %s's previous password: %s", target, type(e).__name__)
        return _refuse(503, f"could not keep the previous password of {target} valid for its grace period ({type(e).__name__}); the password was not changed, try again")
    return None


def _refuse(status: int, message: str) -> Response:
    res = jsonify({"error_code": "TEMPORARILY_UNAVAILABLE" if status == 503 else "INVALID_PARAMETER_VALUE", "message": message})
    res.status_code = status
    return res


def authenticate():
    # MLflow asks again within one request (sender_is_admin, response redaction, some handlers):
    # the first answer stands for the whole request. Asking again would cost another password
    # hash or two each time, and a password changed (or a grace period ended) in between would
    # make MLflow fail the request with a 500 instead of answering it.
    if "mlops_auth" in g:
        return g.mlops_auth
    g.mlops_auth = _authenticate()
    return g.mlops_auth


def _authenticate():
    result = authenticate_request_basic_auth()
    if isinstance(result, Authorization):
        if _is_rotation_with_grace():
            refused = _record_grace(result.username)
            if refused is not None:
                return refused
        return result
    if EXACT_HEADER in request.headers:
        return result
    auth = request.authorization
    if auth is not None and auth.username and auth.password and _previous_password_ok(auth.username, auth.password):
        return auth
    return result
