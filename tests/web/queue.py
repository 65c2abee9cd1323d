"""A node with two routes and two destinations, and jobs moved through the real job and delivery
stores (no network): what the status page and /metrics read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from node.config import load_settings
from node.deid.pixels.outcome import PixelOutcome
from node.factory import Node
from node.persist.models import Delivery, DeliveryState, JobState
from node.queue.deliveries import Refused, Waiting

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ROUTES = {"ct": ("pacs", "archive"), "mr": ("pacs",)}


def routed_node(node_config: Callable[..., Path], database_url: str | None = None) -> Node:
    """Route `ct` sends to `pacs` and `archive`, route `mr` to `pacs` (peers never called); the
    database a SQLite file unless `database_url` names one."""
    config = node_config(pixels=False, database_url=database_url, routes=[
        {"name": name, "calling_ae_titles": ["MODALITY"], "modalities": [name.upper()], "profile": "basic.yaml",
         "destinations": list(destinations)} for name, destinations in ROUTES.items()],
        destinations={name: {"ae_title": name.upper(), "host": "127.0.0.1", "port": 9}
                      for name in ("pacs", "archive")})
    node = Node(load_settings(config))
    node.upgrade_database()
    return node


def received(node: Node) -> int:
    """An instance received, its route not chosen yet."""
    number = len(node.jobs.jobs_in(list(JobState), limit=100_000))
    return node.jobs.enqueue(spool_file=f"f{number}", calling_ae="MODALITY", sop_class_uid=CT_IMAGE,
                             sop_instance_hash=f"{number:064x}", size_bytes=1)


def cleaned(node: Node, route: str, count: int) -> list[int]:
    """`count` instances received and de-identified on `route`: one pending delivery per destination."""
    ids = [received(node) for _ in range(count)]
    for job in node.jobs.claim(JobState.PROCESSING, "w:1", 30, limit=count):
        node.jobs.mark_clean(job.id, "w:1", new_sop_instance_uid=f"2.25.{job.id}", patient_pseudonym="ANON-X",
                             detail=PixelOutcome(False, 2, 0, 1, "no phi").audit_detail(), route=route,
                             project="default", destinations=ROUTES[route])
    return ids


def settle(node: Node, destination: str, *, delivered: list[int] = (), waiting: dict[int, str] | None = None,  # type: ignore[assignment]
           refused: dict[int, str] | None = None) -> None:
    """The forwarder of `destination` settles its due deliveries of these jobs: taken, waiting
    (due again in ten minutes) with a reason, or refused with a reason."""
    waiting, refused = waiting or {}, refused or {}
    claimed = {d.job_id: d for d in node.deliveries.claim(destination, "f:1", 30, 1000)}
    assert set(claimed) == {*delivered, *waiting, *refused}, "settle every due delivery, none left leased"
    node.deliveries.settle(destination, "f:1", delivered=[claimed[j] for j in delivered],
                           waiting=[Waiting(claimed[j], reason, 600) for j, reason in waiting.items()],
                           refused=[Refused(claimed[j], reason) for j, reason in refused.items()])


def set_aside(node: Node, reason: str) -> int:
    """An instance de-identification quarantined before it was routed."""
    job_id = received(node)
    (job,) = node.jobs.claim(JobState.PROCESSING, "w:1", 30)
    node.jobs.quarantine(job.id, "w:1", reason)
    return job_id


def delivery_states(node: Node, job_id: int) -> dict[str, DeliveryState]:
    with node.sessions() as session:
        return {destination: DeliveryState(state) for destination, state in session.execute(
            select(Delivery.destination, Delivery.state).where(Delivery.job_id == job_id))}
