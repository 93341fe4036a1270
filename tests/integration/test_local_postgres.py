"""LocalPostgres against Debian's real PostgreSQL server: restart and crash recovery."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from scrapifie.local.ports import free_port
from scrapifie.local.postgres import LocalPostgres

pytestmark = pytest.mark.integration


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    """A 0700 directory, like the ``mktemp -d`` checkout CI runs in (root-only when root)."""
    path = tmp_path / "private"
    path.mkdir()
    path.chmod(0o700)
    return path


@pytest.fixture
def pg(private_dir: Path) -> Iterator[LocalPostgres]:
    instance = LocalPostgres(data_dir=private_dir / "pg", port=free_port())
    try:
        yield instance
    finally:
        instance.destroy()


def _rows(dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, body FROM pages ORDER BY id").fetchall()


def test_restart_and_crash_recovery_keep_committed_rows(pg: LocalPostgres) -> None:
    assert pg.dsn == f"postgresql://scrapifie:scrapifie@127.0.0.1:{pg.port}/scrapifie"
    assert stat.S_IMODE(pg.data_dir.parent.stat().st_mode) == 0o700

    pg.start()
    assert pg.is_running()
    if os.geteuid() == 0:
        assert pg.cluster_dir != pg.data_dir
        assert pg.cluster_dir.owner() == "postgres"
        assert str(pg.cluster_dir) in (pg.data_dir / "POSTGRES_CLUSTER_LOCATION.txt").read_text()
    else:
        assert pg.cluster_dir == pg.data_dir
    with psycopg.connect(pg.dsn) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            "scrapifie",
            "scrapifie",
        )
        conn.execute("CREATE TABLE pages (id int PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO pages VALUES (1, 'héllo')")

    # Clean stop, then start reuses the cluster.
    pg.stop()
    assert not pg.is_running()
    pg.start()
    assert _rows(pg.dsn) == [(1, "héllo")]

    # A commit right before a crash must survive it (fsync on, WAL replay).
    with psycopg.connect(pg.dsn) as conn:
        conn.execute("INSERT INTO pages VALUES (2, 'before crash')")
    # An idle client connection is open while the postmaster dies: its backend must go away on
    # its own, or the next start() would find the shared memory still attached.
    idle = psycopg.connect(pg.dsn)
    try:
        old_pid = pg.pid
        assert old_pid is not None
        pg.kill()
        assert pg.pid is None
        assert not pg.is_running()
    finally:
        idle.close()

    pg.start()
    assert pg.pid not in (None, old_pid)
    assert _rows(pg.dsn) == [(1, "héllo"), (2, "before crash")]
    assert "automatic recovery in progress" in pg.log_tail(200)

    pg.stop()
    assert not pg.is_running()
    pg.stop()  # idempotent


def test_wrong_password_is_rejected_over_tcp(pg: LocalPostgres) -> None:
    with pg:
        bad = pg.dsn.replace(":scrapifie@", ":wrong@")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(bad, connect_timeout=5).close()
    assert not pg.is_running()


def test_start_restarts_a_server_another_process_left_running(pg: LocalPostgres) -> None:
    """What ``scrapifie up`` finds after a predecessor was SIGKILLed before its database got
    the parent-death signal: a second instance on the same data dir stops that server (it may
    run an old configuration) and starts its own, keeping the data."""
    pg.start()
    with psycopg.connect(pg.dsn) as conn:
        conn.execute("CREATE TABLE pages (id int PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO pages VALUES (1, 'kept')")
    first = pg.pid
    successor = LocalPostgres(data_dir=pg.data_dir, port=pg.port)
    try:
        successor.start()
        assert successor.pid not in (None, first)
        assert _rows(successor.dsn) == [(1, "kept")]
    finally:
        successor.stop()
    pg.stop()  # reaps the first postmaster
    assert not pg.is_running()
