"""The start-up sweep leaves no original that no job reaches, and quarantine retention deletes
quarantined originals with an audit row."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from sqlalchemy import select, update

from node.config import load_settings
from node.factory import Node
from node.persist.models import AuditEvent, Job, JobState, utcnow
from node.queue.sealing import MAGIC
from node.queue.sweep import ADOPTED_CALLER, purge_expired_quarantine, sweep_spool

CT = Path(get_testdata_file("CT_small.dcm"))


def _node(node_config) -> Node:  # type: ignore[no-untyped-def]
    node = Node(load_settings(node_config(pixels=False)))
    node.upgrade_database()
    return node


def test_orphans_are_adopted_sealed_or_quarantined_and_forwarded_leftovers_deleted(node_config) -> None:  # type: ignore[no-untyped-def]
    node = _node(node_config)
    spool = node.spool
    sealed_orphan, plain_orphan, broken_orphan, queued, forwarded = (spool.new_name() for _ in range(5))
    spool.accept(sealed_orphan, CT.read_bytes())
    spool.path("incoming", plain_orphan).write_bytes(CT.read_bytes())  # from a node before sealing
    spool.accept(broken_orphan, b"FAKE neither DICOM nor anything")
    for name in (queued, forwarded):
        spool.accept(name, CT.read_bytes())
        node.jobs.enqueue(spool_file=name, calling_ae="MODALITY", sop_class_uid="1.2", sop_instance_hash="a" * 64,
                          size_bytes=1)
    with node.sessions.begin() as session:
        session.execute(update(Job).where(Job.spool_file == forwarded).values(state=JobState.FORWARDED))

    report = sweep_spool(spool, node.jobs, node.derivation)

    assert (report.adopted, report.unreadable, report.sealed, report.leftovers) == (2, 1, 1, 1)
    adopted = {job.spool_file: job for job in node.jobs.jobs_in([JobState.RECEIVED]) if job.calling_ae == ADOPTED_CALLER}
    assert set(adopted) == {sealed_orphan, plain_orphan}
    original = pydicom.dcmread(CT, stop_before_pixels=True)
    assert {job.sop_class_uid for job in adopted.values()} == {original.SOPClassUID}
    assert {job.sop_instance_hash for job in adopted.values()} == {
        node.derivation.lookup_hash("uid", original.SOPInstanceUID)}  # as the SCP would have recorded it
    [broken] = node.jobs.jobs_in([JobState.QUARANTINED])
    assert broken.spool_file == broken_orphan and "unreadable (InvalidDicomError)" in (broken.last_error or "")
    assert spool.names("quarantine") == [broken_orphan]
    assert sorted(spool.names("incoming")) == sorted([sealed_orphan, plain_orphan, queued])
    assert all(spool.path("incoming", n).read_bytes().startswith(MAGIC) for n in spool.names("incoming"))
    assert sweep_spool(spool, node.jobs, node.derivation).adopted == 0  # nothing twice


def test_quarantined_originals_are_purged_after_the_retention_with_an_audit_row(node_config) -> None:  # type: ignore[no-untyped-def]
    node = _node(node_config)
    old, recent = node.spool.new_name(), node.spool.new_name()
    ids = {}
    for name in (old, recent):
        node.spool.accept(name, CT.read_bytes())
        ids[name] = node.jobs.enqueue(spool_file=name, calling_ae="MODALITY", sop_class_uid="1.2",
                                      sop_instance_hash="b" * 64, size_bytes=1)
        node.jobs.quarantine(ids[name], None, "pixel step: test")
        node.spool.quarantine(name)
    with node.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == ids[old]).values(updated_at=utcnow() - timedelta(days=31)))

    assert purge_expired_quarantine(node.spool, node.jobs, retention_days=30) == 1

    assert node.jobs.get(ids[old]) is None and node.spool.names("quarantine") == [recent]
    with node.sessions() as session:
        [purged] = session.scalars(select(AuditEvent).where(AuditEvent.event == "purged")).all()
    assert f"job={ids[old]}" in (purged.detail or "") and "retention 30 days" in (purged.detail or "")
