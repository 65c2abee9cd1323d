"""The status page and its token, in process: a failing destination shows with its newest
reason and a retry button that works; the cookie and CSRF rules hold."""

from __future__ import annotations

from starlette.testclient import TestClient

from node.config import load_settings
from node.factory import Node
from node.persist.models import JobState
from node.web.app import create_app
from node.web.auth import SESSION_COOKIE, AdminToken

TOKEN = b"test-admin-token-0123456789abcdef"
DESTINATION = "PACS@127.0.0.1:4242"


def _failed(node: Node, reasons: list[str]) -> None:
    """Jobs whose forward failed, each with its reason, through the real job store."""
    for number, reason in enumerate(reasons):
        node.jobs.enqueue(spool_file=f"f{number}", calling_ae="MODALITY", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                          sop_instance_hash=f"{number:064x}", size_bytes=1)
        (job,) = node.jobs.claim(JobState.PROCESSING, "w:1", 30)
        node.jobs.mark_clean(job.id, "w:1", new_sop_instance_uid=f"2.25.{job.id}", patient_pseudonym="ANON-X",
                             detail="pixels=off")
        (job,) = node.jobs.claim(JobState.FORWARDING, "f:1", 30)
        node.jobs.retry_later(job.id, "f:1", state=JobState.FAILED, error=reason, delay_seconds=600,
                              destination=DESTINATION)


def test_failing_destination_shown_and_retried_with_csrf(node_config) -> None:  # type: ignore[no-untyped-def]
    node = Node(load_settings(node_config()))
    node.upgrade_database()
    _failed(node, ["association refused", "status 0xA700 (Failure)"])
    token = AdminToken(TOKEN)
    client = TestClient(create_app(node, token), base_url="http://127.0.0.1")

    assert client.get("/", headers={"Accept": "text/html"}, follow_redirects=False).headers["location"] == "/login"
    assert client.post("/login", data={"token": "wrong-token-of-some-length"}).status_code == 401
    logged_in = client.post("/login", data={"token": TOKEN.decode()}, follow_redirects=False)
    cookie = logged_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN.decode() not in cookie
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    failing = page.text.split('id="failing"', 1)[1].split("</table>", 1)[0]
    assert DESTINATION in failing and "status 0xA700 (Failure)" in failing and ">2<" in failing
    assert 'data-state="failed">2<' in page.text

    assert client.post("/failed/retry", data={"csrf": "forged"}).status_code == 403
    assert node.jobs.status().by_state["failed"] == 2
    assert client.post("/failed/retry", data={"csrf": token.csrf}, follow_redirects=False).status_code == 303
    states = node.jobs.status().by_state
    assert states["failed"] == 0 and states["clean"] == 2

    client.cookies.clear()
    assert client.post("/failed/retry", data={"csrf": token.csrf}).status_code == 401  # the CSRF token alone is no login
    bearer = {"Authorization": f"Bearer {TOKEN.decode()}"}
    assert client.get("/metrics", headers=bearer).status_code == 200
    assert client.cookies.get(SESSION_COOKIE) is None
