"""Fills the fleet's private Python package index from the roles' lock files.

    python3 test/fleet/fill-index.py DEST --source https://pypi.org/simple \
        --python-version 3.11.2 --lock roles/mlflow/requirements.lock ... --extra uv==0.13.8

For every pinned requirement of every lock whose environment marker holds on
the VMs (Debian 12: CPython --python-version, Linux x86_64), it picks the
files that are both listed in the lock (by sha256) and installable there
(the best compatible wheel; the sdist when there is none), downloads each
once into DEST/files/ (checking its sha256 before it is kept), and writes a
PEP 503 simple index of what DEST holds to DEST/simple/<name>/index.html.
A private mirror in a tenancy without internet access holds the same files.

`--extra NAME==VERSION` adds a package the locks do not pin (the agent
bootstraps uv with `pip install uv==<version>`): its best compatible wheel,
without a hash to check against (the source index's own sha256 is checked).

Only the interpreter's own tags are used (packaging, vendored in pip), so run
it with a Python of the VMs' minor version on the VMs' architecture and libc.
Prints one JSON line: counts and bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request

from pip._vendor.packaging.markers import Marker, default_environment
from pip._vendor.packaging.tags import sys_tags
from pip._vendor.packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from pip._vendor.packaging.version import Version

REQ = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def parse_lock(path: str, env: dict) -> dict[tuple[str, str], set[str]]:
    """(canonical name, version) -> allowed sha256s, for requirements whose marker holds."""
    out: dict[tuple[str, str], set[str]] = {}
    current: tuple[str, str] | None = None
    for raw in open(path, encoding="utf-8"):
        line = raw.strip()
        if not line or line.startswith("#"):
            current = None if not line else current
            continue
        m = REQ.match(line)
        if m:
            name, version, marker = m.group(1), m.group(2), m.group(3)
            holds = marker is None or Marker(marker).evaluate(env)
            current = (canonicalize_name(name), version) if holds else None
            if current:
                out.setdefault(current, set())
        if current:
            out[current].update(HASH.findall(line))
    return out


def retrying(what: str, fn):
    """Runs FN, retrying transient network errors (a resolver hiccup, a reset) a few times."""
    for attempt in range(5):
        try:
            return fn()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            if attempt == 4 or isinstance(err, urllib.error.HTTPError) and err.code < 500:
                raise
            print(f"{what}: {err}; retrying", file=sys.stderr)
            time.sleep(2 * (attempt + 1))


def files_of(source: str, name: str) -> list[dict]:
    req = urllib.request.Request(f"{source.rstrip('/')}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})

    def get():
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.load(r)["files"]

    return retrying(name, get)


def pick(files: list[dict], name: str, version: str, hashes: set[str] | None, tags: list) -> dict | None:
    """The best file of NAME==VERSION listed in HASHES (any, when None): a compatible wheel, else the sdist."""
    rank = {t: i for i, t in enumerate(tags)}
    best, best_rank, sdist = None, None, None
    want = Version(version)
    for f in files:
        fn = f["filename"]
        sha = f.get("hashes", {}).get("sha256")
        if not sha or (hashes is not None and sha not in hashes) or f.get("yanked") and hashes is None:
            continue
        try:
            if fn.endswith(".whl"):
                n, v, _, ftags = parse_wheel_filename(fn)
                if canonicalize_name(n) != name or v != want:
                    continue
                r = min((rank[t] for t in ftags if t in rank), default=None)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = f, r
            elif fn.endswith((".tar.gz", ".zip")):
                n, v = parse_sdist_filename(fn)
                if canonicalize_name(n) == name and v == want:
                    sdist = f
        except Exception:
            continue
    return best or sdist


def download(f: dict, dest: str) -> int:
    target = os.path.join(dest, "files", f["filename"])
    sha = f["hashes"]["sha256"]
    if os.path.exists(target):
        return 0
    fd, tmp = tempfile.mkstemp(dir=os.path.join(dest, "files"), prefix=".part-")
    os.close(fd)

    def get():
        h = hashlib.sha256()
        with open(tmp, "wb") as out, urllib.request.urlopen(f["url"], timeout=300) as r:
            while chunk := r.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        return h.hexdigest()

    try:
        got = retrying(f["filename"], get)
        if got != sha:
            raise RuntimeError(f"{f['filename']}: sha256 {got} is not the expected {sha}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return os.path.getsize(target)


def write_index(dest: str) -> int:
    by_name: dict[str, list[str]] = {}
    for fn in sorted(os.listdir(os.path.join(dest, "files"))):
        if fn.startswith("."):
            continue
        try:
            n = parse_wheel_filename(fn)[0] if fn.endswith(".whl") else parse_sdist_filename(fn)[0]
        except Exception:
            continue
        by_name.setdefault(canonicalize_name(n), []).append(fn)
    for name, fns in by_name.items():
        d = os.path.join(dest, "simple", name)
        os.makedirs(d, exist_ok=True)
        links = []
        for fn in fns:
            sha = hashlib.sha256(open(os.path.join(dest, "files", fn), "rb").read()).hexdigest()
            links.append(f'<a href="../../files/{html.escape(fn)}#sha256={sha}">{html.escape(fn)}</a><br>')
        body = f"<!DOCTYPE html><html><body><h1>{name}</h1>\n" + "\n".join(links) + "\n</body></html>\n"
        with open(os.path.join(d, "index.html"), "w", encoding="utf-8") as fh:
            fh.write(body)
    root = "".join(f'<a href="{n}/">{n}</a><br>\n' for n in sorted(by_name))
    with open(os.path.join(dest, "simple", "index.html"), "w", encoding="utf-8") as fh:
        fh.write(f"<!DOCTYPE html><html><body>\n{root}</body></html>\n")
    return len(by_name)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dest")
    ap.add_argument("--source", default="https://pypi.org/simple")
    ap.add_argument("--python-version", required=True, help="the VMs' full Python version, for markers")
    ap.add_argument("--lock", action="append", default=[])
    ap.add_argument("--extra", action="append", default=[])
    a = ap.parse_args()

    env = default_environment()
    env.update(python_full_version=a.python_version, python_version=".".join(a.python_version.split(".")[:2]))
    tags = list(sys_tags())
    wanted: dict[tuple[str, str], set[str] | None] = {}
    for lock in a.lock:
        for key, hashes in parse_lock(lock, env).items():
            prev = wanted.get(key)
            wanted[key] = hashes if prev is None else prev | hashes
    for extra in a.extra:
        n, v = extra.split("==")
        wanted.setdefault((canonicalize_name(n), v), None)

    os.makedirs(os.path.join(a.dest, "files"), exist_ok=True)
    fetched = 0
    sdists = []
    for (name, version), hashes in sorted(wanted.items()):
        f = pick(files_of(a.source, name), name, version, hashes, tags)
        if f is None:
            print(f"no installable file of {name}=={version} with a locked hash at {a.source}", file=sys.stderr)
            return 1
        if not f["filename"].endswith(".whl"):
            sdists.append(f["filename"])
        fetched += download(f, a.dest)
    names = write_index(a.dest)
    print(json.dumps({"requirements": len(wanted), "projects": names, "downloadedBytes": fetched, "sdists": sdists}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
