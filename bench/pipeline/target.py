"""The target: a generated corpus of HTML pages served by nginx on several 127.0.0.x addresses.

Every address is its own site (an IP literal is its own registrable domain, ``schemas.site_key``),
so jobs spread over the tier topic's partitions and no per-site limit dominates. Linux routes
all of 127.0.0.0/8 to loopback, so 127.0.0.2-17 need no configuration.

Why 16 sites: tier topics are keyed by site, so a worker process gets whole sites. Kafka's key
hashing put the 5 sites used before on 4 of the 6 partitions (two on one), and in the
two-worker round one worker was assigned 400 of the 2,000 jobs: it measured that split, not the
second worker. 16 sites land 3/3/3/3/2/2 on the partitions.

nginx runs in the foreground (``daemon off``) as our child, from a config generated in a temp
dir: no access log, keep-alive connections reused for up to 100,000 requests, no gzip.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

HOSTS = tuple(f"127.0.0.{i}" for i in range(2, 18))
#: The slow server's rate per response (nginx ``limit_rate``): a 20 KB page takes ~0.6 s and a
#: 100 KB one ~3 s, so a worker really holds its 200 fetches in flight at once (from the fast
#: server they finish before 200 are ever started: 59-66 seen at max_in_flight=200).
SLOW_RATE_KIB = 32
# (body size in bytes, weight): mostly 20 KB like the reference figures, some small, some large.
SIZES = ((2 * 1024, 3), (20 * 1024, 5), (100 * 1024, 2))

_TEXT = (
    "scrape fetch kafka stream result sink tier worker page content html body title header "
    "link anchor div span table row column list item market price product review news sport "
    "weather city river mountain valley ocean forest garden house window door street market "
    "the of and to in is was for on with as by at from that this which be are or an it not"
)
_WORDS = tuple(_TEXT.split())


class TargetError(RuntimeError):
    """nginx is missing and cannot be installed, or did not start."""


@dataclass(frozen=True)
class Corpus:
    root: Path
    paths: list[str]  # URL paths, "/p/00000.html"
    sizes: list[int]  # body bytes of each path

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)

    def urls(self, port: int) -> list[str]:
        """The URL list: page i on host ``HOSTS[i % len(HOSTS)]``."""
        return [f"http://{HOSTS[i % len(HOSTS)]}:{port}{p}" for i, p in enumerate(self.paths)]


def build_corpus(root: Path, pages: int, seed: int = 6) -> Corpus:
    """Write ``pages`` deterministic HTML pages (sizes drawn from SIZES) under ``root/p``."""
    rng = random.Random(seed)
    pool = " ".join(rng.choice(_WORDS) for _ in range(60_000)).encode()  # ~300 KB of text
    (root / "p").mkdir(parents=True, exist_ok=True)
    sizes_only = [s for s, _ in SIZES]
    weights = [w for _, w in SIZES]
    paths: list[str] = []
    sizes: list[int] = []
    for i in range(pages):
        size = rng.choices(sizes_only, weights)[0]
        head = (
            f"<!doctype html><html><head><title>Page {i}</title></head><body><h1>Page {i}</h1><p>"
        ).encode()
        tail = b"</p></body></html>\n"
        n = size - len(head) - len(tail)
        start = rng.randrange(0, len(pool) - n)
        body = head + pool[start : start + n] + tail
        path = f"/p/{i:05d}.html"
        (root / path.lstrip("/")).write_bytes(body)
        paths.append(path)
        sizes.append(len(body))
    (root / "health").write_bytes(b"ok\n")
    return Corpus(root, paths, sizes)


def nginx_binary(install: bool = True) -> str:
    """The nginx executable; installs Debian's package when missing and we are root."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found:
        return found
    if not install or os.geteuid() != 0:
        raise TargetError(
            "nginx is required for the benchmark target: run `sudo apt-get install -y nginx`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "nginx"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise TargetError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(found, os.X_OK):
        raise TargetError("nginx was installed but no nginx executable was found")
    return found


class Nginx:
    """nginx serving ``corpus.root`` on ``HOSTS`` x ``port``; a context manager."""

    def __init__(
        self,
        corpus: Corpus,
        workdir: Path,
        port: int,
        workers: int | str = "auto",
        slow_port: int | None = None,
    ) -> None:
        self.corpus = corpus
        self.workdir = workdir
        self.port = port
        self.workers = workers
        self.slow_port = slow_port  # the same pages, each sent at SLOW_RATE_KIB KiB/s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def _server(self, port: int, extra: str = "") -> str:
        """One server block serving the corpus on every host at ``port``."""
        listens = "\n".join(f"        listen {h}:{port} reuseport;" for h in HOSTS)
        return f"""
    server {{
{listens}
        root {self.corpus.root};{extra}
        location / {{ try_files $uri =404; }}
    }}"""

    def _config(self) -> str:
        servers = self._server(self.port)
        if self.slow_port is not None:
            servers += self._server(self.slow_port, f"\n        limit_rate {SLOW_RATE_KIB}k;")
        tmp = self.workdir / "tmp"
        temps = "\n".join(
            f"    {kind}_temp_path {tmp / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""
worker_processes {self.workers};
daemon off;
master_process on;
pid {self.workdir / "nginx.pid"};
error_log {self.workdir / "error.log"} warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000;
    keepalive_timeout 120s;
    server_tokens off;
    types {{ text/html html; text/plain txt; }}
    default_type text/plain;
{temps}{servers}
}}
"""

    def start(self, timeout_s: float = 20.0) -> None:
        binary = nginx_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        # As root, nginx workers run as an unprivileged user: the corpus must be world-readable.
        for path in (self.workdir, self.corpus.root, *self.corpus.root.parents):
            if str(path).startswith(("/tmp/", "/var/tmp/")) and path.is_dir():
                with contextlib.suppress(OSError):
                    path.chmod(0o755)
        conf = self.workdir / "nginx.conf"
        conf.write_text(self._config())
        log = open(self.workdir / "stderr.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                binary,
                "-p",
                str(self.workdir),
                "-e",
                str(self.workdir / "error.log"),
                "-c",
                str(conf),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        pending = list(HOSTS)
        while pending:
            if self.proc.poll() is not None:
                raise TargetError(f"nginx exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TargetError(f"nginx not listening on {pending} after {timeout_s}s")
            pending = [h for h in pending if not _accepts(h, self.port)]
            if not pending and self.slow_port is not None:
                pending = [h for h in HOSTS if not _accepts(h, self.slow_port)]
            if pending:
                time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for name in ("stderr.log", "error.log"):
            path = self.workdir / name
            if path.exists():
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)

    def __enter__(self) -> Nginx:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _accepts(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0
