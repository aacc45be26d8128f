"""A throwaway PostgreSQL server for tests: Debian's postgresql (installed with apt when missing and root),
a fresh cluster in a temp directory, listening on 127.0.0.1 on a free port, password authentication.

Use the ``pg_server`` fixture (import it into the test module). When PostgreSQL cannot be installed or
started, the tests that use it are skipped with the reason printed.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

USER = "mdpo"
DB = "dagster"
#: A user of its own when the tests run as root (postgres refuses to): Debian's `postgres`, else this one.
SERVER_USER_FALLBACK = "mdpo-pg"


@dataclass(frozen=True)
class PgServer:
    """A running throwaway server and how to reach it."""

    host: str
    port: int
    user: str
    dbname: str
    datadir: Path
    password: str = field(repr=False)
    options: str = ""  # the server's command-line options (pg_ctl -o), for a restart

    def env(self, **extra: str) -> dict[str, str]:
        """The MDPO_PG_* variables of DeploymentSettings for this server."""
        return {"MDPO_PG_HOST": self.host, "MDPO_PG_PORT": str(self.port), "MDPO_PG_USER": self.user,
                "MDPO_PG_PASSWORD": self.password, "MDPO_PG_DB": self.dbname, **extra}

    def connect(self, dbname: str | None = None):
        """A psycopg2 connection (autocommit) to ``dbname`` (default: the test database)."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=dbname or self.dbname, connect_timeout=10)
        conn.autocommit = True
        return conn


class Unavailable(RuntimeError):
    """PostgreSQL cannot be installed or started here."""


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    # Debian keeps the server programs out of PATH, one directory per major version.
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def find_or_install() -> Path:
    """The directory holding initdb and pg_ctl, installing Debian's postgresql when root and it is missing."""
    if bindir := _bindir():
        return bindir
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("initdb not found and cannot install Debian's postgresql (not root or no apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # a fresh image has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, check=False)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not (bindir := _bindir()):
        raise Unavailable(f"apt-get install postgresql failed: {proc.stderr.strip()[-500:]}")
    return bindir


def _server_user() -> str | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", SERVER_USER_FALLBACK):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER_FALLBACK],
                   check=True, capture_output=True)
    return SERVER_USER_FALLBACK


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], user: str | None, **kw) -> subprocess.CompletedProcess:
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)


def start(base: Path | None = None) -> PgServer:
    """Initialise and start a server (Unavailable when that is impossible here); stop it with ``stop``."""
    bindir = find_or_install()
    user = _server_user()
    # Not under pytest's tmp dir: that is private to our uid, and the server runs as another user when we are root.
    root = Path(tempfile.mkdtemp(prefix="mdpo-pg-", dir=base))
    datadir, sockdir, log = root / "data", root / "sock", root / "server.log"
    sockdir.mkdir()
    # Special characters on purpose: every URI and config path must quote the password correctly.
    password = f"p@ss:w/rd%{secrets.token_hex(8)}"
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if user:
        shutil.chown(root, user)
        for p in (sockdir, pwfile):
            shutil.chown(p, user)
    pwfile.chmod(0o600)
    proc = _run([str(bindir / "initdb"), "-D", str(datadir), "-U", USER, "--pwfile", str(pwfile),
                 "--auth", "scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync"], user)
    pwfile.unlink()
    if proc.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise Unavailable(f"initdb failed: {proc.stderr.strip()[-500:]}")
    # Durability off: the cluster is thrown away, and fsyncs dominate small test transactions.
    opts = f"-h 127.0.0.1 -k {sockdir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    for _ in range(3):  # the free port can be taken between the probe and the server's bind
        port = _free_port()
        proc = _run([str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(log), "-w", "-t", "60",
                     "-o", f"{opts} -p {port}", "start"], user)
        if proc.returncode == 0:
            break
    else:
        tail = log.read_text()[-1500:] if log.exists() else proc.stderr
        shutil.rmtree(root, ignore_errors=True)
        raise Unavailable(f"pg_ctl start failed: {tail}")
    server = PgServer("127.0.0.1", port, USER, DB, datadir, password, f"{opts} -p {port}")
    conn = server.connect("postgres")
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{DB}"')
    finally:
        conn.close()
    return server


def restart(server: PgServer, down_s: float) -> None:
    """Stop the server as an operator would (fast: open connections are cut), keep it down ``down_s`` seconds,
    start it again on the same port and data."""
    bindir, user = find_or_install(), _server_user()
    log = server.datadir.parent / "server.log"
    proc = _run([str(bindir / "pg_ctl"), "-D", str(server.datadir), "-m", "fast", "-w", "stop"], user)
    assert proc.returncode == 0, proc.stderr
    time.sleep(down_s)
    proc = _run([str(bindir / "pg_ctl"), "-D", str(server.datadir), "-l", str(log), "-w", "-t", "60",
                 "-o", server.options, "start"], user)
    assert proc.returncode == 0, log.read_text()[-1500:]


def stop(server: PgServer) -> None:
    """Stop the server and remove its directory."""
    bindir = find_or_install()
    _run([str(bindir / "pg_ctl"), "-D", str(server.datadir), "-m", "fast", "-w", "stop"], _server_user())
    shutil.rmtree(server.datadir.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    """A running throwaway PostgreSQL for the module's tests; skipped (reason printed) when unavailable."""
    try:
        server = start()
    except Unavailable as e:
        print(f"PostgreSQL unavailable, skipping: {e}", file=sys.stderr)
        pytest.skip(f"PostgreSQL unavailable: {e}")
    try:
        yield server
    finally:
        stop(server)
