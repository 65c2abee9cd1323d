"""The administrator's window on a real node: storescu sends fake-PHI instances on a route with
two destinations, Orthanc takes them all, a CT viewer refuses the secondary capture's SOP class;
headless Chromium reads the status page, reviews the quarantined instance's masked frame and
releases it (only the viewer is sent it again); /metrics counts what was sent, by route and
destination; nothing shown anywhere holds the PHI."""

from __future__ import annotations

import http.client
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.common.by import By
from sqlalchemy import select

from node.config import load_settings
from node.factory import Node
from node.persist.models import AuditEvent, JobState
from tests.nodeproc import REPO, NodeProcess, wait_until, write_config
from tests.servers import Orthanc, free_port, storage_peer, storescu, unavailable
from tests.web.browser import chromium, data_uri_image, submit
from tests.web.phi import leaks, phi_strings, write_burned_in, write_cts

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(unavailable("orthanc") or unavailable("dcmtk") or unavailable("chromium")),
                       reason="needs Orthanc, dcmtk and Chromium"),
]

DOCS = REPO / "docs"
CT_COUNT = 3
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ROUTE = "research"


def _request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
             body: str | None = None) -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read().decode(errors="replace")
    finally:
        connection.close()


def job_counts(config: Path) -> dict[str, int]:
    """Jobs per state, read in this process (a CLI call costs seconds of imports)."""
    node = Node(load_settings(config))
    try:
        return node.jobs.status().by_state
    finally:
        node.engine.dispose()


def events_of(config: Path, job_id: int) -> list[tuple[str, str | None]]:
    """The audit trail of one job, oldest first: (event, detail)."""
    node = Node(load_settings(config))
    try:
        with node.sessions() as session:
            return [(event, detail) for event, detail in session.execute(
                select(AuditEvent.event, AuditEvent.detail).where(AuditEvent.job_id == job_id)
                .order_by(AuditEvent.id))]
    finally:
        node.engine.dispose()


def quarantined_file(config: Path) -> Path:
    node = Node(load_settings(config))
    try:
        (job,) = node.jobs.jobs_in([JobState.QUARANTINED])
        return node.spool.path("quarantine", job.spool_file)
    finally:
        node.engine.dispose()


def _after_release(events: list[tuple[str, str | None]]) -> list[str]:
    names = [event for event, _ in events]
    return names[names.index("requeued"):] if "requeued" in names else []


def _metrics(port: int, token: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    status, _, text = _request(port, "GET", "/metrics", {"Authorization": f"Bearer {token}"})
    assert status == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def _sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def pacs():  # type: ignore[no-untyped-def]
    with Orthanc(aet="RESEARCH_PACS") as server:
        yield server


@pytest.fixture(scope="module")
def ct_viewer():  # type: ignore[no-untyped-def]
    """A DICOM peer that takes CT images only: it refuses any other SOP class for cause."""
    with storage_peer([CT_IMAGE]) as port:
        yield port


@pytest.fixture(scope="module")
def sent(pacs: Orthanc, ct_viewer: int, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """CT instances delivered to both destinations of the route, and a secondary capture with
    burned-in text that the research PACS takes and the CT viewer refuses (its SOP class): the
    node quarantines it, the node's state an administrator finds, from one node start."""
    base = tmp_path_factory.mktemp("window")
    burned, mask = write_burned_in(base / "send" / "burned.dcm")
    cts = write_cts(base / "send", CT_COUNT)
    port, web_port = free_port(), free_port()
    web = {"enabled": True, "port": web_port, "admin_token_file": str(base / "node" / "admin-token"),
           "refresh_seconds": 30}
    config = write_config(base / "node", port=port, web=web, routes=[
        {"name": ROUTE, "calling_ae_titles": ["MODALITY"], "profile": "tcia.yaml",
         "pixel_policy": "pixel-policy.yaml", "destinations": ["pacs", "ct_viewer"]}], destinations={
        "pacs": {"ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port},
        "ct_viewer": {"ae_title": "SINK", "host": "127.0.0.1", "port": ct_viewer}})
    started = time.monotonic()
    node = NodeProcess(config, port).start()
    storescu([*cts, burned], port, called_ae="DEID_NODE")
    assert pacs.wait_for_count(CT_COUNT + 1, timeout=120) == CT_COUNT + 1
    assert wait_until(lambda: job_counts(config).get("quarantined") == 1, 120)
    assert wait_until(lambda: _request(web_port, "GET", "/login")[0] == 200, 60, 0.2)
    print(f"web: node up, {CT_COUNT + 1} instances settled in {time.monotonic() - started:.1f} s")
    token = (base / "node" / "admin-token").read_text().strip()
    yield {"node": node, "config": config, "web_port": web_port, "token": token, "burned": burned, "mask": mask,
           "phi": phi_strings([burned, *cts])}
    node.stop()


def test_requests_without_the_token_are_refused(sent: dict[str, Any]) -> None:
    port = sent["web_port"]
    assert _request(port, "GET", "/metrics")[0] == 401
    assert _request(port, "GET", "/metrics", {"Authorization": "Bearer not-the-token-at-all"})[0] == 401
    status, headers, _ = _request(port, "GET", "/", {"Accept": "text/html"})
    assert status == 303 and headers["location"] == "/login"
    assert _request(port, "POST", "/quarantine/1/release")[0] == 401
    assert job_counts(sent["config"])["quarantined"] == 1


def test_metrics_count_what_was_sent(sent: dict[str, Any]) -> None:
    _, samples = _metrics(sent["web_port"], sent["token"])
    assert _sample(samples, "deid_node_instances_received_total", route=ROUTE) == CT_COUNT + 1
    assert _sample(samples, "deid_node_deliveries_delivered_total", route=ROUTE, destination="pacs") == CT_COUNT + 1
    assert _sample(samples, "deid_node_deliveries_delivered_total", route=ROUTE, destination="ct_viewer") == CT_COUNT
    assert _sample(samples, "deid_node_deliveries_quarantined_total", route=ROUTE, destination="ct_viewer") == 1
    assert _sample(samples, "deid_node_deliveries_quarantined_total", route=ROUTE, destination="pacs") == 0
    assert _sample(samples, "deid_node_deliveries", route=ROUTE, destination="ct_viewer", state="quarantined") == 1
    assert _sample(samples, "deid_node_deliveries_waiting", route=ROUTE, destination="pacs") == 0
    assert _sample(samples, "deid_node_instances_quarantined_total", route=ROUTE) == 1
    assert _sample(samples, "deid_node_jobs", route=ROUTE, state="forwarded") == CT_COUNT
    assert _sample(samples, "deid_node_jobs", route=ROUTE, state="quarantined") == 1
    assert _sample(samples, "deid_node_stage_seconds_count", route=ROUTE, stage="forward") == CT_COUNT
    assert _sample(samples, "deid_node_pixel_frames_scanned_total") == CT_COUNT + 1  # one frame each
    assert _sample(samples, "deid_node_pixel_frames_ocr_total") >= 1  # the secondary capture is read whole


def test_status_review_release_and_no_phi_anywhere(sent: dict[str, Any]) -> None:
    port, phi = sent["web_port"], sent["phi"]
    shown: dict[str, str] = {}
    with chromium() as browser:
        browser.get(f"http://127.0.0.1:{port}/")
        assert browser.current_url.endswith("/login")
        browser.find_element(By.NAME, "token").send_keys(sent["token"])
        submit(browser, browser.find_element(By.CSS_SELECTOR, "form[action='/login'] button"))
        assert browser.current_url.endswith("/")
        cookie = browser.get_cookie("deid_admin")
        assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        states = {cell.get_attribute("data-state"): int(cell.text)
                  for cell in browser.find_elements(By.CSS_SELECTOR, "#jobs-per-state td")}
        assert states["forwarded"] == CT_COUNT and states["quarantined"] == 1
        viewer = {cell.get_attribute("data-state"): int(cell.text) for cell in browser.find_elements(
            By.CSS_SELECTOR, "#per-destination tr[data-destination='ct_viewer'] td[data-state]")}
        assert viewer["delivered"] == CT_COUNT and viewer["quarantined"] == 1
        assert browser.find_element(By.CSS_SELECTOR, "#quarantine .refused-by").text == "ct_viewer"
        assert browser.find_element(By.CSS_SELECTOR, "svg[aria-label]").is_displayed()
        shown["status"] = browser.page_source
        DOCS.mkdir(exist_ok=True)
        browser.save_screenshot(str(DOCS / "status-page.png"))

        browser.find_element(By.CSS_SELECTOR, "#quarantine a").click()
        assert "delivery to ct_viewer: refused by ct_viewer: presentation context not accepted" in browser.find_element(
            By.ID, "reason").text
        assert browser.find_element(By.ID, "refused-by").text == "ct_viewer"
        frame = browser.find_element(By.CSS_SELECTOR, "img.frame")
        picture = np.asarray(data_uri_image(frame.get_attribute("src")).convert("RGB"))
        assert picture.shape[:2] == (256, 256)  # the frame's rows and columns
        assert not (picture[sent["mask"]].min(axis=1) > 200).any(), "burned-in text left white in the review"
        shown["review"] = browser.page_source
        shown["review url"] = browser.current_url
        browser.save_screenshot(str(DOCS / "quarantine-review.png"))

        session = {"Cookie": f"deid_admin={cookie['value']}", "Content-Type": "application/x-www-form-urlencoded"}
        job_path = browser.current_url.split(str(port), 1)[1]
        assert _request(port, "POST", f"{job_path}/release", session, "csrf=forged")[0] == 403
        submit(browser, browser.find_element(By.ID, "release"))
        assert browser.current_url.endswith("/")
        job_id = int(job_path.rsplit("/", 1)[1])  # back in the queue: de-identified again after the release
        assert wait_until(lambda: "quarantined" in _after_release(events_of(sent["config"], job_id)), 60)
        # the viewer refused it again (quarantined again, and this time purged for good); the PACS,
        # which had it, was not sent it again
        assert "deidentified" in _after_release(events_of(sent["config"], job_id))
        assert [d for e, d in events_of(sent["config"], job_id) if e == "delivered"] == ["pacs"]
        assert job_counts(sent["config"]).get("quarantined") == 1
        spool_file = quarantined_file(sent["config"])
        assert spool_file.exists()
        browser.get(f"http://127.0.0.1:{port}{job_path}")
        browser.find_element(By.ID, "purge").click()  # without the confirmation box: the browser refuses
        assert browser.current_url.endswith(job_path) and spool_file.exists()
        browser.find_element(By.NAME, "confirm").click()
        submit(browser, browser.find_element(By.ID, "purge"))
        assert browser.current_url.endswith("/")
        assert job_counts(sent["config"])["quarantined"] == 0 and not spool_file.exists()

        browser.get(f"http://127.0.0.1:{port}/preview")
        browser.find_element(By.NAME, "file").send_keys(str(sent["burned"]))
        submit(browser, browser.find_element(By.CSS_SELECTOR, "form[action='/preview'] button"))
        assert browser.find_elements(By.CSS_SELECTOR, "img.frame")
        shown["preview"] = browser.page_source
    shown["metrics"] = _metrics(port, sent["token"])[0]
    shown["node log"] = sent["node"].log()
    for where, text in shown.items():
        assert not leaks(text, phi), f"PHI in {where}: {leaks(text, phi)}"
