"""A Redis on loopback for the local cluster's GCS fault tolerance (``make serve HA=1``).

Debian's ``redis-server`` (``make`` installs it), bound to 127.0.0.1, its password read from a
file of mode 0600 and written into a config file (``requirepass``, mode 0600): never on a
command line. Its data directory is its own, so it outlives the Ray head it serves.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class RedisError(RuntimeError):
    """Redis could not be started or reached, or its password file is unusable."""


@dataclass(frozen=True)
class Redis:
    port: int
    password_file: Path
    directory: Path
    process: subprocess.Popen

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def password_from(path: Path, create: bool) -> str:
    """The password in ``path``; a new random one written there (mode 0600) if ``create`` and
    the file is missing. A file others can read is refused."""
    if not path.exists():
        if not create:
            raise RedisError(f"redis password file {path}: not found")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise RedisError(f"redis password file {path}: mode {mode:o}, expected 600 "
                         "(readable by its owner only)")
    password = path.read_text().strip()
    if not password or any(c.isspace() or c == '"' for c in password):
        raise RedisError(f"redis password file {path}: expected one word without spaces or "
                         "quotes")
    return password


def _ping(port: int, password: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            data = b""
            while data.count(b"\r\n") < 2:
                chunk = s.recv(1024)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    return data == b"+OK\r\n+PONG\r\n"


def start(directory: Path, port: int, password_file: Path, timeout: float = 30) -> Redis:
    """``redis-server`` on 127.0.0.1:``port`` with its config and data in ``directory``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisError("redis-server not found: `make serve HA=1` installs Debian's package")
    password = password_from(password_file, create=True)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "redis.conf"
    config.touch(mode=0o600)
    config.chmod(0o600)
    config.write_text("\n".join([
        # set-proc-title no: the command line keeps naming the config (make serve-stop finds it)
        "bind 127.0.0.1", f"port {port}", "protected-mode yes", "daemonize no", "set-proc-title no",
        f'dir "{directory}"', "appendonly yes", 'save ""',
        f'logfile "{directory / "redis.log"}"', f'requirepass "{password}"', "",
    ]))
    proc = subprocess.Popen([binary, str(config)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not _ping(port, password):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RedisError(f"redis-server did not answer on 127.0.0.1:{port}; log: "
                             f"{directory / 'redis.log'}")
        time.sleep(0.2)
    return Redis(port, password_file, directory, proc)
