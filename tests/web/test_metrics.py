"""/metrics counts from the audit trail, read incrementally: each event once, also one that
commits after later ids were read, and a purged job's events stay counted."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from node.config import load_settings
from node.deid.pixels.outcome import PixelOutcome
from node.factory import Node
from node.metrics import NodeMetrics
from node.persist.models import AuditEvent, JobState, utcnow


def _values(reader: NodeMetrics) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(reader.text().decode()) for s in family.samples}


def _through(node: Node, count: int) -> list[int]:
    """`count` instances received, de-identified and forwarded through the real job store."""
    ids = [node.jobs.enqueue(spool_file=f"f{i}", calling_ae="MODALITY", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                             sop_instance_hash=f"{i:064x}", size_bytes=1) for i in range(count)]
    for job in node.jobs.claim(JobState.PROCESSING, "w:1", 30, limit=count):
        node.jobs.mark_clean(job.id, "w:1", new_sop_instance_uid=f"2.25.{job.id}", patient_pseudonym="ANON-X",
                             detail=PixelOutcome(False, 2, 0, 1, "no phi").audit_detail())
    claimed = node.jobs.claim(JobState.FORWARDING, "f:1", 30, limit=count)
    node.jobs.mark_forwarded([j.id for j in claimed], "f:1", "PACS@127.0.0.1:4242")
    return ids


def _event(node: Node, event_id: int, event: str) -> None:
    with node.engine.begin() as connection:
        connection.execute(AuditEvent.__table__.insert(), [dict(id=event_id, event=event, at=utcnow(), job_id=None)])


def test_counts_each_event_once_late_commits_included_purged_kept(node_config) -> None:  # type: ignore[no-untyped-def]
    node = Node(load_settings(node_config()))
    node.upgrade_database()
    reader = NodeMetrics(node.sessions, node.settings)
    forwarded = ("deid_node_instances_forwarded_total",
                 frozenset({"route": "default", "destination": "PACS@127.0.0.1:4242"}.items()))
    received = ("deid_node_instances_received_total", frozenset({"route": "default"}.items()))

    first = _through(node, 3)
    _event(node, 100, "note")  # ids 10..99 stay free: one of them commits late, below
    values = _values(reader)
    assert values[received] == 3 and values[forwarded] == 3
    assert values[("deid_node_pixel_frames_scanned_total", frozenset())] == 6
    assert values[("deid_node_stage_seconds_count", frozenset({"route": "default", "stage": "forward"}.items()))] == 3

    _through(node, 2)
    _event(node, 50, "received")  # a transaction that took its id early and commits after id 100 was read
    node.jobs.quarantine(first[0], None, "test reason")
    assert node.jobs.purge(first[0], "test")  # purged: its events lose their job, and still count
    values = _values(reader)
    assert values[received] == 3 + 2 + 1 and values[forwarded] == 5
    assert values[("deid_node_instances_quarantined_total", frozenset({"route": "default"}.items()))] == 1
    assert _values(reader)[received] == 6  # a scrape with nothing new adds nothing
