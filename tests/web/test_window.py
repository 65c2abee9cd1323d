"""The administrator's window on a real node: storescu sends fake-PHI instances, Orthanc takes
the clean ones, headless Chromium reads the status page, reviews a quarantined instance's masked
frame and releases it; /metrics counts what was sent; nothing shown anywhere holds the PHI."""

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
from tests.servers import Orthanc, free_port, storescu, unavailable
from tests.web.browser import chromium, data_uri_image, submit
from tests.web.phi import leaks, phi_strings, write_burned_in, write_cts

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(unavailable("orthanc") or unavailable("dcmtk") or unavailable("chromium")),
                       reason="needs Orthanc, dcmtk and Chromium"),
]

DOCS = REPO / "docs"
CT_COUNT = 3


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


def events_of(config: Path, job_id: int) -> list[str]:
    """The audit trail of one job, oldest first."""
    node = Node(load_settings(config))
    try:
        with node.sessions() as session:
            return list(session.scalars(select(AuditEvent.event).where(AuditEvent.job_id == job_id)
                                        .order_by(AuditEvent.id)))
    finally:
        node.engine.dispose()


def quarantined_file(config: Path) -> Path:
    node = Node(load_settings(config))
    try:
        (job,) = node.jobs.jobs_in([JobState.QUARANTINED])
        return node.spool.path("quarantine", job.spool_file)
    finally:
        node.engine.dispose()


def _deidentified_after_release(events: list[str]) -> bool:
    return "requeued" in events and "deidentified" in events[events.index("requeued"):]


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
def sent(pacs: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """CT instances forwarded, and a secondary capture with burned-in text that the research PACS
    refuses (it has no study or series UID) and the forwarder quarantines after its tries: the
    node's state an administrator finds, from one node start."""
    base = tmp_path_factory.mktemp("window")
    burned, mask = write_burned_in(base / "send" / "burned.dcm")
    cts = write_cts(base / "send", CT_COUNT)
    port, web_port = free_port(), free_port()
    web = {"enabled": True, "port": web_port, "admin_token_file": str(base / "node" / "admin-token"),
           "refresh_seconds": 30}
    config = write_config(base / "node", port=port, dest_port=pacs.dicom_port, web=web)
    started = time.monotonic()
    node = NodeProcess(config, port).start()
    storescu([*cts, burned], port, called_ae="DEID_NODE")
    assert pacs.wait_for_count(CT_COUNT, timeout=120) == CT_COUNT
    assert wait_until(lambda: job_counts(config).get("quarantined") == 1, 120)
    assert wait_until(lambda: _request(web_port, "GET", "/login")[0] == 200, 60, 0.2)
    print(f"web: node up, {CT_COUNT + 1} instances settled in {time.monotonic() - started:.1f} s")
    token = (base / "node" / "admin-token").read_text().strip()
    yield {"node": node, "config": config, "web_port": web_port, "token": token, "burned": burned, "mask": mask,
           "phi": phi_strings([burned, *cts]), "destination": f"RESEARCH_PACS@127.0.0.1:{pacs.dicom_port}"}
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
    assert _sample(samples, "deid_node_instances_received_total", route="default") == CT_COUNT + 1
    assert _sample(samples, "deid_node_instances_forwarded_total", route="default",
                   destination=sent["destination"]) == CT_COUNT
    assert _sample(samples, "deid_node_instances_quarantined_total", route="default") == 1
    assert _sample(samples, "deid_node_jobs", route="default", state="forwarded") == CT_COUNT
    assert _sample(samples, "deid_node_jobs", route="default", state="quarantined") == 1
    assert _sample(samples, "deid_node_stage_seconds_count", route="default", stage="forward") == CT_COUNT
    assert _sample(samples, "deid_node_pixel_frames_scanned_total") == CT_COUNT + 1  # one frame each
    assert _sample(samples, "deid_node_pixel_frames_ocr_total") >= 1  # the secondary capture is read whole
    assert _sample(samples, "deid_node_instances_retried_total", route="default", destination=sent["destination"],
                   stage="forward") >= 1


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
        assert browser.find_element(By.CSS_SELECTOR, "svg[aria-label]").is_displayed()
        shown["status"] = browser.page_source
        DOCS.mkdir(exist_ok=True)
        browser.save_screenshot(str(DOCS / "status-page.png"))

        browser.find_element(By.CSS_SELECTOR, "#quarantine a").click()
        assert "forward failed" in browser.find_element(By.ID, "reason").text
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
        assert wait_until(lambda: _deidentified_after_release(events_of(sent["config"], job_id)), 60)
        # the research PACS refuses it again: quarantined again, and this time purged for good
        assert wait_until(lambda: job_counts(sent["config"]).get("quarantined") == 1, 60)
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
