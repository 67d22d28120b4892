"""Is this Airflow Celery worker able to take tasks, and if not, why not.

Shipped by mlops-agent with the airflow-worker role. Two uses, one set of checks:

  worker_ready.py check ENV_FILE
      The agent's readiness probe (run as root, without the service's
      environment: it reads the role's 0600 env file). Exit 0 when the worker
      answers a Celery ping through the broker; else exit 1 with one line that
      says what is wrong, in the order of causes: the metadata database
      (unreachable, login refused, not migrated yet by the airflow role's VM),
      the broker (unreachable, TLS, login refused), the worker itself. Never
      prints a password. Cheap enough for every 30 s: no Airflow import
      (celery, redis and psycopg2 only: about 0.9 s of CPU), one ping with a
      3 s deadline that returns at the first answer.

  worker_ready.py run -- COMMAND...
      The service's entry: waits until the database can be used (saying why
      not, once per change of reason), then execs COMMAND (`airflow celery
      worker ...`) in its place. Airflow's worker creates Celery's result
      tables at start and exits when the database is not there; waiting here
      keeps it from a restart loop while the scheduler VM provisions and
      migrates. A broker that is down is Celery's to retry (it does, forever).
"""

import os
import socket
import ssl
import sys
import time
from urllib.parse import unquote, urlsplit, urlunsplit

PING_TIMEOUT_S = 3.0
WAIT_PERIOD_S = 5.0


def read_env_file(path):
    """KEY=VALUE and KEY="VALUE" lines as mlops-agent writes them (\\ \" \\$ \\` escaped in quotes)."""
    env = {}
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line.strip() or line.lstrip().startswith(("#", ";")) or "=" not in line:
                continue
            key, value = line.split("=", 1)
            key = key.strip()
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                out, i, body = [], 0, value[1:-1]
                while i < len(body):
                    if body[i] == "\\" and i + 1 < len(body):
                        i += 1
                    out.append(body[i])
                    i += 1
                value = "".join(out)
            env[key] = value
    return env


def shown(url):
    """A URL without its credentials, for a message."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def first_line(err):
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class NotReady(Exception):
    pass


def check_database(env):
    """The result backend is the metadata DB: reachable, our login accepted, migrated by the airflow role."""
    url = env.get("AIRFLOW__CELERY__RESULT_BACKEND", "").removeprefix("db+")
    if not url.startswith("postgresql"):
        return  # only PostgreSQL is checked (Airflow 3.3 runs on MySQL only with mysqlclient)
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 5432}/{parts.path.lstrip('/')}"
    user = unquote(parts.username or "")
    import psycopg2

    try:
        conn = psycopg2.connect(
            host=parts.hostname,
            port=parts.port or 5432,
            dbname=unquote(parts.path.lstrip("/")),
            user=user,
            password=unquote(parts.password or ""),
            connect_timeout=3,
        )
    except psycopg2.OperationalError as err:
        msg = first_line(err)
        if "password authentication failed" in msg or "does not exist" in msg or "no pg_hba.conf entry" in msg:
            raise NotReady(
                f"metadata database {where}: login as {user} refused ({msg}); the airflow role's VM provisions that user,"
                " and airflow.database.password must be its password"
            ) from None
        raise NotReady(f"metadata database {where} unreachable: {msg}") from None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
            migrated = cur.fetchone()[0]
            if migrated:
                cur.execute("SELECT count(*) FROM alembic_version")
                migrated = cur.fetchone()[0] > 0
    finally:
        conn.close()
    if not migrated:
        raise NotReady(f"metadata database {where} is not migrated yet (the airflow role's VM runs `airflow db migrate`); waiting")


def ssl_options(env):
    """What providers-celery builds from [celery] ssl_* for a Redis broker: the server's certificate verified, never CERT_NONE."""
    if env.get("AIRFLOW__CELERY__SSL_ACTIVE", "").lower() != "true":
        return None
    opts = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if env.get("AIRFLOW__CELERY__SSL_CACERT"):
        opts["ssl_ca_certs"] = env["AIRFLOW__CELERY__SSL_CACERT"]
    return opts


def check_broker(env):
    import redis

    url = env.get("AIRFLOW__CELERY__BROKER_URL", "")
    tls = ssl_options(env) or {}
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3, **tls)
        client.ping()
        client.close()
    except redis.exceptions.AuthenticationError as err:
        raise NotReady(
            f"broker {shown(url)} refused the login ({first_line(err)}): check airflow.celery.brokerPassword and brokerUser"
        ) from None
    except redis.exceptions.ResponseError as err:
        if "NOAUTH" in str(err) or "WRONGPASS" in str(err):
            raise NotReady(f"broker {shown(url)} refused the login ({first_line(err)}): check airflow.celery.brokerPassword and brokerUser") from None
        raise NotReady(f"broker {shown(url)}: {first_line(err)}") from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as err:
        msg = first_line(err)
        if "CERTIFICATE_VERIFY_FAILED" in msg or "certificate" in msg.lower():
            ca = tls.get("ssl_ca_certs", "the OS trust store")
            raise NotReady(f"broker {shown(url)}: TLS certificate not trusted ({msg}); CA: {ca} (airflow.celery.caFile)") from None
        raise NotReady(f"broker {shown(url)} unreachable: {msg}") from None


def check_worker(env):
    """The worker's own node answers a ping through the broker: its consumer is connected and its event loop runs."""
    from celery import Celery

    node = f"celery@{socket.gethostname()}"
    app = Celery("mlops-worker-probe", broker=env.get("AIRFLOW__CELERY__BROKER_URL", ""), set_as_current=False)
    tls = ssl_options(env)
    if tls:
        app.conf.broker_use_ssl = tls
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_max_retries = 0
    try:
        replies = app.control.ping(destination=[node], timeout=PING_TIMEOUT_S, limit=1)
    except Exception as err:  # the broker went away between the two checks
        raise NotReady(f"broker {shown(app.conf.broker_url or '')}: {first_line(err)}") from None
    finally:
        app.close()
    if not any(node in r for r in replies or []):
        raise NotReady(f"worker {node} did not answer a ping through the broker within {PING_TIMEOUT_S:g} s (starting, reconnecting, or stuck)")
    return node


def check(env_file):
    env = read_env_file(env_file)
    try:
        check_database(env)
        check_broker(env)
        node = check_worker(env)
    except NotReady as why:
        print(why, file=sys.stderr)
        return 1
    print(f"{node} answers through the broker")
    return 0


def run(command):
    last = None
    while True:
        try:
            check_database(dict(os.environ))
            break
        except NotReady as why:
            if str(why) != last:
                print(f"waiting before starting the worker: {why}", flush=True)
                last = str(why)
        time.sleep(WAIT_PERIOD_S)
    if last is not None:
        print("the metadata database is ready: starting the worker", flush=True)
    os.execv(command[0], command)


def main(argv):
    if len(argv) == 3 and argv[1] == "check":
        return check(argv[2])
    if len(argv) > 3 and argv[1] == "run" and argv[2] == "--":
        run(argv[3:])
    print("usage: worker_ready.py check ENV_FILE | run -- COMMAND...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
