"""/metrics counts from the audit trail and the deliveries table: received and quarantined by
route, delivered, refused, waiting and retried by route and destination, queue depth per job and
delivery state; the audit trail is read incrementally: each event once, also one that commits after
later ids were read, and a purged job's events stay counted."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.metrics import NodeMetrics
from node.persist.models import AuditEvent, JobState, utcnow
from tests.servers import unavailable
from tests.web.queue import ROUTES, cleaned, received, routed_node, set_aside, settle

Key = tuple[str, frozenset[tuple[str, str]]]


def _values(reader: NodeMetrics) -> dict[Key, float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(reader.text().decode()) for s in family.samples}


def _key(name: str, **labels: str) -> Key:
    return name, frozenset(labels.items())


def _event(node, event_id: int, event: str) -> None:  # type: ignore[no-untyped-def]
    with node.engine.begin() as connection:
        connection.execute(AuditEvent.__table__.insert(), [dict(id=event_id, event=event, at=utcnow(), job_id=None)])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (a SQLite file), or a fresh database on the suite's PostgreSQL: several nodes may
    share one, and the metrics' SQL must read the same on both."""
    if request.param == "sqlite":
        return None
    if reason := unavailable("postgres"):
        pytest.skip(reason)
    return str(request.getfixturevalue("postgres").create_database(f"web_{uuid.uuid4().hex[:16]}"))


def test_counts_by_route_and_destination_each_event_once_late_commits_included_purged_kept(
        node_config, database_url: str | None) -> None:  # type: ignore[no-untyped-def]
    node = routed_node(node_config, database_url)
    reader = NodeMetrics(node.sessions, node.settings)
    assert _values(reader)[_key("deid_node_deliveries_delivered_total", route="ct", destination="archive")] == 0

    ct = cleaned(node, "ct", 3)
    mr = cleaned(node, "mr", 2)
    settle(node, "pacs", delivered=[*ct, *mr[:1]], refused={mr[1]: "refused: status 0xC000 (cannot understand)"})
    settle(node, "archive", delivered=ct[:1], waiting={ct[1]: "association refused", ct[2]: "association refused"})
    node.deliveries.make_due("archive")
    settle(node, "archive", delivered=ct[1:2], waiting={ct[2]: "timed out"})
    set_aside(node, "unreadable")
    _event(node, 100, "note")  # ids below 100 stay free: one of them commits late, below
    values = _values(reader)
    assert values[_key("deid_node_instances_received_total", route="ct")] == 3
    held_back = received(node)  # counted on its route once the worker chose it, not as unrouted
    assert _values(reader)[_key("deid_node_instances_received_total", route="unrouted")] == 1
    assert [j.id for j in node.jobs.claim(JobState.PROCESSING, "w:1", 30)] == [held_back]
    node.jobs.mark_clean(held_back, "w:1", new_sop_instance_uid="2.25.9", patient_pseudonym="ANON-X", detail="",
                         route="ct", project="default", destinations=ROUTES["ct"])
    assert _values(reader)[_key("deid_node_instances_received_total", route="ct")] == 4
    # received and set aside before a route was chosen, on a node of several routes
    assert values[_key("deid_node_instances_received_total", route="unrouted")] == 1
    assert values[_key("deid_node_instances_quarantined_total", route="unrouted")] == 1
    assert values[_key("deid_node_instances_quarantined_total", route="mr")] == 1
    assert values[_key("deid_node_deliveries_delivered_total", route="ct", destination="pacs")] == 3
    assert values[_key("deid_node_deliveries_delivered_total", route="ct", destination="archive")] == 2
    assert values[_key("deid_node_deliveries_delivered_total", route="mr", destination="pacs")] == 1
    assert values[_key("deid_node_deliveries_quarantined_total", route="mr", destination="pacs")] == 1
    assert values[_key("deid_node_deliveries_quarantined_total", route="ct", destination="pacs")] == 0
    assert values[_key("deid_node_deliveries_waiting", route="ct", destination="archive")] == 1
    assert values[_key("deid_node_deliveries_retried_total", route="ct", destination="archive")] == 1 + 2
    assert values[_key("deid_node_deliveries_retried_total", route="ct", destination="pacs")] == 0
    assert _key("deid_node_destination_waiting_since_seconds", route="ct", destination="archive") in values
    assert _key("deid_node_destination_waiting_since_seconds", route="ct", destination="pacs") not in values
    assert values[_key("deid_node_jobs", route="ct", state="forwarded")] == 2
    assert values[_key("deid_node_jobs", route="ct", state="clean")] == 1
    assert values[_key("deid_node_jobs", route="mr", state="quarantined")] == 1
    assert values[_key("deid_node_deliveries", route="ct", destination="archive", state="pending")] == 1
    assert values[_key("deid_node_deliveries", route="ct", destination="archive", state="delivered")] == 2
    assert values[_key("deid_node_pixel_frames_scanned_total")] == 2 * 5
    assert values[_key("deid_node_stage_seconds_count", route="ct", stage="forward")] == 2
    assert values[_key("deid_node_stage_seconds_count", route="mr", stage="deid")] == 2

    node.deliveries.make_due("archive")
    settle(node, "archive", delivered=[held_back], refused={ct[2]: "waited longer than forward.give_up_after_seconds"})
    _event(node, 50, "received")  # a transaction that took its id early and commits after id 100 was read
    assert node.jobs.purge(mr[1], "test")  # purged: its events lose their job, and still count
    values = _values(reader)
    assert values[_key("deid_node_instances_received_total", route="unrouted")] == 2
    assert values[_key("deid_node_deliveries_quarantined_total", route="mr", destination="pacs")] == 1
    assert values[_key("deid_node_deliveries_delivered_total", route="ct", destination="pacs")] == 3
    assert values[_key("deid_node_deliveries_quarantined_total", route="ct", destination="archive")] == 1
    assert values[_key("deid_node_deliveries_waiting", route="ct", destination="archive")] == 0  # refused now
    assert _key("deid_node_destination_waiting_since_seconds", route="ct", destination="archive") not in values
    assert _values(reader)[_key("deid_node_instances_received_total", route="ct")] == 4  # nothing new adds nothing
