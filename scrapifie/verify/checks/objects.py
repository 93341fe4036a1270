"""Checks on the object store: no object missing, none extra, a sample hashes to its row."""

from __future__ import annotations

import gzip
import hashlib
from datetime import datetime

from connectors.storage import StorageError, open_store
from schemas.records import FINAL_STATUSES, JobStatus
from scrapifie.settings import Settings
from scrapifie.verify.report import Check
from scrapifie.verify.state import Db, Job, JobRow, VerifyError
from scrapifie.verify.store import owned_keys, parse_object_key

__all__ = ["INTEGRITY_SAMPLE", "check_extra_objects", "check_integrity", "check_missing_objects"]

INTEGRITY_SAMPLE = 20  # objects downloaded and hashed


def check_missing_objects(db: Db, objects: dict[str, datetime]) -> Check:
    check = Check("missing_objects", "every succeeded row's content (and screenshot) object exists")
    for (tenant, job_id), r in db.jobs.items():
        if r.status != JobStatus.SUCCEEDED:
            continue
        for key in (r.content_key, r.screenshot_key):
            if not key:
                continue
            check.checked += 1
            if key not in objects:
                check.fail(f"{tenant}/{job_id}: {key} absent")
    return check


def check_extra_objects(
    db: Db,
    objects: dict[str, datetime],
    owners: dict[Job, JobRow],
    results_lag: int,
    started: datetime,
) -> Check:
    check = Check("extra_objects", "every object belongs to a succeeded row")
    owned = owned_keys(db.all_rows())
    for key, modified in objects.items():
        if modified < db.cutoff:
            continue
        check.checked += 1
        if key in owned:
            continue
        parsed = parse_object_key(key)
        if parsed is None:
            check.fail(f"{key}: not an object key of ours")
            continue
        row = owners.get(parsed[1:])
        if row is not None and row.status == JobStatus.SUCCEEDED and key in owned_keys([row]):
            continue
        state = "no row" if row is None else f"row {row.status}"
        if modified >= started:
            check.wait(f"{key}: written during this check ({state})")
        elif (row is None or row.status not in FINAL_STATUSES) and results_lag:
            check.wait(f"{key}: {state}, results sink lag {results_lag}")
        else:
            check.fail(f"{key}: {state}")
    return check


async def check_integrity(settings: Settings, db: Db) -> Check:
    check = Check(
        "content_integrity",
        f"up to {INTEGRITY_SAMPLE} content objects hash to their rows' content_sha256",
    )
    rows = sorted(
        (
            (job, r)
            for job, r in db.jobs.items()
            if r.status == JobStatus.SUCCEEDED and r.content_key
        ),
        key=lambda item: hashlib.sha256("/".join(item[0]).encode()).hexdigest(),
    )[:INTEGRITY_SAMPLE]
    store = open_store(settings.storage, settings.data_dir)
    for (tenant, job_id), r in rows:
        assert r.content_key is not None
        check.checked += 1
        try:
            data = await store.get(r.content_key)
        except StorageError as exc:
            raise VerifyError(f"object store unreadable: {exc}") from exc
        if data is None:
            continue  # reported by missing_objects
        try:
            digest = hashlib.sha256(gzip.decompress(data)).hexdigest()
        except (OSError, EOFError) as exc:
            check.fail(f"{tenant}/{job_id}: {r.content_key} is not gzip ({exc})")
            continue
        if digest != r.content_sha256:
            check.fail(f"{tenant}/{job_id}: object sha256 {digest} != row {r.content_sha256}")
    return check
