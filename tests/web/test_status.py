"""The status page and its token, in process: jobs per state, deliveries per destination and
state, a waiting destination with since when and its newest reason, the quarantine with who
refused; the retry button makes waiting deliveries due, release sends only where it is missing;
the cookie and CSRF rules hold."""

from __future__ import annotations

from starlette.testclient import TestClient

from node.persist.models import DeliveryState, JobState
from node.web.app import create_app
from node.web.auth import SESSION_COOKIE, AdminToken
from tests.web.queue import cleaned, delivery_states, routed_node, set_aside, settle

TOKEN = b"test-admin-token-0123456789abcdef"
REFUSAL = "refused: presentation context not accepted: 1.2.840.10008.5.1.4.1.1.2 in 1.2.840.10008.1.2.1"


def _part(page: str, marker: str, end: str = "</table>") -> str:
    return page.split(marker, 1)[1].split(end, 1)[0]


def test_status_shows_jobs_deliveries_waits_and_refusals_and_its_buttons_work(node_config) -> None:  # type: ignore[no-untyped-def]
    node = routed_node(node_config)
    first, second, refused = cleaned(node, "ct", 3)
    (mr,) = cleaned(node, "mr", 1)
    settle(node, "pacs", delivered=[first, second, mr], refused={refused: REFUSAL})
    settle(node, "archive", delivered=[refused], waiting={first: "association refused", second: "association refused"})
    node.deliveries.make_due("archive")
    settle(node, "archive", waiting={first: "association refused", second: "timed out after 10 s"})
    unreadable = set_aside(node, "unreadable DICOM file (InvalidDicomError)")
    token = AdminToken(TOKEN)
    client = TestClient(create_app(node, token), base_url="http://127.0.0.1")

    assert client.get("/", headers={"Accept": "text/html"}, follow_redirects=False).headers["location"] == "/login"
    assert client.post("/login", data={"token": "wrong-token-of-some-length"}).status_code == 401
    logged_in = client.post("/login", data={"token": TOKEN.decode()}, follow_redirects=False)
    cookie = logged_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN.decode() not in cookie
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    jobs = _part(page.text, 'id="jobs-per-state"')
    for state, count in (("clean", 2), ("forwarded", 1), ("quarantined", 2), ("received", 0)):
        assert f'data-state="{state}">{count}<' in jobs
    assert 'data-state="failed"' not in jobs  # a state no job enters any more, and no old row holds
    pacs = _part(page.text, 'id="per-destination"').split('data-destination="pacs"', 1)[1].split("</tr>", 1)[0]
    archive = _part(page.text, 'id="per-destination"').split('data-destination="archive"', 1)[1].split("</tr>", 1)[0]
    assert 'data-state="delivered">3<' in pacs and 'data-state="quarantined">1<' in pacs
    assert 'data-state="delivered">1<' in archive and 'data-state="pending">2<' in archive
    waiting = _part(page.text, 'id="waiting"')
    assert 'data-destination="pacs"' not in waiting
    row = _part(waiting, 'data-destination="archive"', "</tr>")
    assert ">2<" in row and "timed out after 10 s" in row and "association refused" not in row and " UTC" in row
    quarantine = _part(page.text, 'id="quarantine"')
    assert _part(quarantine, f'href="/quarantine/{refused}"', "</tr>").count("pacs") == 2  # reason and refused by
    assert "(de-identification)" in _part(quarantine, f'href="/quarantine/{unreadable}"', "</tr>")

    assert node.deliveries.claim("archive", "f:1", 30, 10) == []  # waiting ten minutes
    assert client.post("/deliveries/retry", data={"csrf": "forged", "destination": "archive"}).status_code == 403
    retried = client.post("/deliveries/retry", data={"csrf": token.csrf, "destination": "archive"},
                          follow_redirects=False)
    assert retried.status_code == 303
    settle(node, "archive", delivered=[first, second])  # due now: both claimed, and taken
    assert node.jobs.status().by_state["forwarded"] == 3

    review = client.get(f"/quarantine/{refused}")
    assert review.status_code == 200 and 'id="refused-by">pacs<' in review.text
    assert "the quarantined copy cannot be read (FileNotFoundError)" in review.text  # no spool copy in this test
    assert client.post(f"/quarantine/{refused}/release", data={"csrf": token.csrf},
                       follow_redirects=False).status_code == 303
    assert node.jobs.get(refused).state == JobState.RECEIVED
    (again,) = node.jobs.claim(JobState.PROCESSING, "w:1", 30)
    node.jobs.mark_clean(again.id, "w:1", new_sop_instance_uid="2.25.1", patient_pseudonym="ANON-X", detail="",
                         route="ct", project="default", destinations=("pacs", "archive"))
    # only the destination that refused it gets it again
    assert delivery_states(node, refused) == {"pacs": DeliveryState.PENDING, "archive": DeliveryState.DELIVERED}

    client.cookies.clear()
    assert client.post("/deliveries/retry", data={"csrf": token.csrf}).status_code == 401  # the CSRF token alone is no login
    bearer = {"Authorization": f"Bearer {TOKEN.decode()}"}
    assert client.get("/metrics", headers=bearer).status_code == 200
    assert client.cookies.get(SESSION_COOKIE) is None
