"""The STOW-RS sender: instances reach a real DICOMweb server (Orthanc with its plugin), and every
answer a server can give -- partial success, refusals, credentials, outages, TLS -- comes to the
outcome the forwarder needs, per instance, in the batch's order.

Answers Orthanc does not give on demand come from a small real HTTP server in the test
(`ScriptedStow`), which also checks the multipart body it receives byte for byte.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pydicom
import pytest

from node.config import DimseDestination, StowAuth, StowDestination
from node.forward.dimse import DimseSender
from node.forward.sender import CleanFile, Outcome, SendResult
from node.forward.stow import StowSender
from tests.servers import Orthanc, free_port, unavailable
from tests.synthetic import write_series
from tests.tls import TestCA

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Read-only here: written once for the module."""
    return write_series(tmp_path_factory.mktemp("ct"), 8)


def _clean(files: Sequence[Path]) -> list[CleanFile]:
    return [CleanFile(path, CT_IMAGE) for path in files]


def _uid(path_or_bytes: Path | bytes) -> str:
    source = BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    return str(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID)


def _outcomes(results: Sequence[SendResult]) -> list[tuple[Outcome, str]]:
    return [(result.outcome, result.detail) for result in results]


def _sender(url: str, **settings: object) -> StowSender:
    return StowSender("research-web", StowDestination(kind="stow", url=url, **settings))


# --- A real DICOMweb server: Orthanc with its DICOMweb plugin, basic authentication on ---------

USER, PASSWORD = "deid", "synthetic-secret-1"


@pytest.fixture(scope="module")
def pacs() -> Iterator[Orthanc]:
    if reason := unavailable("orthanc-dicomweb"):
        pytest.skip(reason)
    with Orthanc(dicomweb=True, users={USER: PASSWORD}) as server:
        yield server


def _password_file(directory: Path, password: str) -> Path:
    path = directory / "stow-password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def _stored_uids(pacs: Orthanc) -> set[str]:
    return {pacs.simplified_tags(instance)["SOPInstanceUID"] for instance in pacs.instances()}


@pytest.mark.e2e
def test_both_kinds_deliver_to_orthanc_which_then_holds_every_instance(
    pacs: Orthanc, ct: list[Path], tmp_path: Path
) -> None:
    auth = StowAuth(username=USER, password_file=_password_file(tmp_path, PASSWORD))
    stow = _sender(pacs.stow_url, auth=auth, batch_size=3)
    results = stow.send(_clean(ct[:5]))  # two requests on one client
    assert [result.outcome for result in results] == [Outcome.DELIVERED] * 5
    assert {result.detail for result in results} == {"HTTP 200"}
    assert not stow.release_if_idle(time.monotonic(), idle_seconds=60)
    assert stow.release_if_idle(time.monotonic(), idle_seconds=0)
    assert not stow.release_if_idle(time.monotonic(), idle_seconds=0)  # nothing left to close

    dimse = DimseSender("research-pacs", DimseDestination(ae_title=pacs.aet, host="127.0.0.1", port=pacs.dicom_port),
                        calling_ae_title="DEID_NODE", timeout=10)
    assert [r.outcome for r in dimse.send(_clean(ct[5:]))] == [Outcome.DELIVERED] * 3
    dimse.close()

    assert {_uid(path) for path in ct} <= _stored_uids(pacs)


@pytest.mark.e2e
def test_a_wrong_password_waits_and_the_corrected_file_is_read_at_the_next_batch(
    pacs: Orthanc, tmp_path: Path
) -> None:
    own = write_series(tmp_path / "own", 2)  # instances no other test of the module stores in this PACS
    password_file = _password_file(tmp_path, "not-the-password")
    stow = _sender(pacs.stow_url, auth=StowAuth(username=USER, password_file=password_file))
    # Nothing is wrong with the instances: no quarantine while an operator fixes the password.
    assert _outcomes(stow.send(_clean(own))) == [(Outcome.WAIT, "HTTP 401: credentials refused (check auth)")] * 2
    assert not {_uid(path) for path in own} & _stored_uids(pacs)

    _password_file(tmp_path, PASSWORD)
    assert [r.outcome for r in stow.send(_clean(own))] == [Outcome.DELIVERED] * 2
    assert {_uid(path) for path in own} <= _stored_uids(pacs)
    stow.close()


# --- A scripted STOW-RS server for the answers Orthanc does not give on demand -------------------

Answer = tuple[int, str, bytes]  # HTTP status, content type, body


@dataclass
class Received:
    parts: list[bytes]
    headers: dict[str, str]

    @property
    def uids(self) -> list[str]:
        return [_uid(part) for part in self.parts]


@dataclass
class ScriptedStow:
    """An HTTP server (thread) that parses each STOW-RS request and answers with `answer(request)`."""

    answer: Callable[[Received], Answer | None]  # None: close the connection without an answer
    tls: ssl.SSLContext | None = None
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    discard: bool = False  # count the body's bytes and answer 200, holding none of it
    bytes_discarded: int = 0

    def __enter__(self) -> ScriptedStow:
        script = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                if script.discard:
                    return self._discard(int(self.headers["Content-Length"]))
                body = self.rfile.read(int(self.headers["Content-Length"]))
                content_type = self.headers["Content-Type"]
                assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
                boundary = content_type.rsplit("boundary=", 1)[1].encode()
                chunks = body.split(b"--" + boundary)
                assert chunks[0] == b"" and chunks[-1] == b"--\r\n"
                parts = []
                for chunk in chunks[1:-1]:
                    head, content = chunk.split(b"\r\n\r\n", 1)
                    assert b"Content-Type: application/dicom" in head and content.endswith(b"\r\n")
                    parts.append(content[:-2])
                received = Received(parts, dict(self.headers))
                script.requests.append(received)
                answer = script.answer(received)
                if answer is None:
                    self.close_connection = True
                    return
                status, media_type, payload = answer
                self.send_response(status)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _discard(self, length: int) -> None:
                while length > 0:
                    chunk = self.rfile.read(min(length, 1 << 20))
                    length -= len(chunk)
                    script.bytes_discarded += len(chunk)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def url(self, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}/dicom-web/studies"


def _json_answer(failed: dict[str, int], stored: dict[str, int]) -> bytes:
    def item(uid: str, reason_tag: str, code: int) -> dict[str, object]:
        found: dict[str, object] = {"00081150": {"vr": "UI", "Value": [CT_IMAGE]},
                                    "00081155": {"vr": "UI", "Value": [uid]}}
        if code:
            found[reason_tag] = {"vr": "US", "Value": [code]}
        return found

    dataset: dict[str, object] = {}
    if failed:
        dataset["00081198"] = {"vr": "SQ", "Value": [item(uid, "00081197", code) for uid, code in failed.items()]}
    if stored:
        dataset["00081199"] = {"vr": "SQ", "Value": [item(uid, "00081196", code) for uid, code in stored.items()]}
    return json.dumps(dataset).encode()


def _xml_answer(failed: dict[str, int], stored: dict[str, int]) -> bytes:
    def sequence(tag: str, reason_tag: str, by_uid: dict[str, int]) -> str:
        items = "".join(
            f'<Item number="{n}"><DicomAttribute tag="00081155" vr="UI" keyword="ReferencedSOPInstanceUID">'
            f'<Value number="1">{uid}</Value></DicomAttribute>'
            + (f'<DicomAttribute tag="{reason_tag}" vr="US"><Value number="1">{code}</Value></DicomAttribute>'
               if code else "") + "</Item>"
            for n, (uid, code) in enumerate(by_uid.items(), 1))
        return f'<DicomAttribute tag="{tag}" vr="SQ">{items}</DicomAttribute>' if by_uid else ""

    return ('<?xml version="1.0" encoding="utf-8"?><NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/'
            f'NativeDICOM">{sequence("00081198", "00081197", failed)}{sequence("00081199", "00081196", stored)}'
            "</NativeDicomModel>").encode()


@pytest.mark.parametrize(("media_type", "build"), [("application/dicom+json", _json_answer),
                                                   ("application/dicom+xml", _xml_answer)])
def test_a_partial_success_settles_each_instance_by_its_own_reason_in_the_batchs_order(
    ct: list[Path], media_type: str, build: Callable[[dict[str, int], dict[str, int]], bytes]
) -> None:
    uids = [_uid(path) for path in ct[:7]]
    failed = {uids[1]: 0xA900, uids[2]: 0xA700, uids[5]: 0, uids[6]: 0x0111}  # 0: no FailureReason given
    stored = {uids[0]: 0, uids[3]: 0xB000}  # uids[4] is not mentioned at all
    with ScriptedStow(lambda request: (202, media_type, build(failed, stored))) as server:
        results = _sender(server.url()).send(_clean(ct[:7]))

    assert _outcomes(results) == [
        (Outcome.DELIVERED, "HTTP 202"),
        (Outcome.REFUSED, "HTTP 202 0xA900 Data Set Does Not Match SOP Class"),
        (Outcome.WAIT, "HTTP 202 0xA700 Refused: Out of Resources"),
        (Outcome.DELIVERED, "HTTP 202 0xB000 Coercion of Data Elements"),
        (Outcome.WAIT, "HTTP 202: instance not in the response"),
        (Outcome.REFUSED, "HTTP 202: failed, no reason given"),
        (Outcome.DELIVERED, "HTTP 202 0x0111 Duplication SOP Instance"),  # the server holds it already
    ]


def test_every_instance_of_a_409_is_refused_with_its_failure_reason(ct: list[Path]) -> None:
    uids = [_uid(path) for path in ct[:2]]
    answer = _json_answer({uids[0]: 0xC000, uids[1]: 0x0122}, {})
    with ScriptedStow(lambda request: (409, "application/dicom+json", answer)) as server:
        results = _sender(server.url()).send(_clean(ct[:2]))

    assert _outcomes(results) == [(Outcome.REFUSED, "HTTP 409 0xC000 Cannot Understand"),
                                  (Outcome.REFUSED, "HTTP 409 0x0122 Refused: SOP Class Not Supported")]


def test_a_request_refused_whole_is_sent_again_one_instance_each_so_only_the_bad_one_is_refused(
    ct: list[Path]
) -> None:
    bad = _uid(ct[1])

    def answer(request: Received) -> Answer:
        return (400, "text/plain", b"bad request") if bad in request.uids else (200, "application/dicom+json", b"{}")

    with ScriptedStow(answer) as server:
        results = _sender(server.url()).send(_clean(ct[:3]))
        assert [len(request.parts) for request in server.requests] == [3, 1, 1, 1]

    assert _outcomes(results) == [(Outcome.DELIVERED, "HTTP 200"), (Outcome.REFUSED, "HTTP 400"),
                                  (Outcome.DELIVERED, "HTTP 200")]


@pytest.mark.parametrize(("status", "detail"), [(503, "HTTP 503"), (500, "HTTP 500"), (429, "HTTP 429"),
                                                (403, "HTTP 403: forbidden (check auth)"),
                                                (404, "HTTP 404: not found (check url)")])
def test_server_errors_throttling_and_operator_errors_wait(ct: list[Path], status: int, detail: str) -> None:
    with ScriptedStow(lambda request: (status, "text/plain", b"try later")) as server:
        results = _sender(server.url()).send(_clean(ct[:2]))
        assert len(server.requests) == 1  # a whole-request WAIT is not split up

    assert _outcomes(results) == [(Outcome.WAIT, detail)] * 2


def test_no_server_a_dropped_connection_and_a_timeout_wait(ct: list[Path]) -> None:
    assert _outcomes(_sender(f"http://127.0.0.1:{free_port()}/studies").send(_clean(ct[:1]))) == [
        (Outcome.WAIT, "connection failed (ConnectError)")]

    with ScriptedStow(lambda request: None) as server:  # reads the request, closes without answering
        [dropped] = _sender(server.url()).send(_clean(ct[:1]))
    assert (dropped.outcome, dropped.detail) == (Outcome.WAIT, "connection failed (RemoteProtocolError)")

    def slow(request: Received) -> Answer:
        time.sleep(1.0)
        return 200, "application/dicom+json", b"{}"

    with ScriptedStow(slow) as server:
        [late] = _sender(server.url(), timeout_seconds=0.3).send(_clean(ct[:1]))
    assert (late.outcome, late.detail) == (Outcome.WAIT, "timeout (ReadTimeout)")


def test_batches_are_cut_to_batch_size_and_each_file_arrives_byte_for_byte_with_the_bearer_token(
    ct: list[Path], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("synthetic-token-42\n")
    missing = tmp_path / "gone.dcm"
    with ScriptedStow(lambda request: (200, "application/dicom+json", b"{}")) as server:
        stow = _sender(server.url(), batch_size=2, auth=StowAuth(bearer_token_file=token_file))
        results = stow.send(_clean([ct[0], missing, *ct[1:5]]))
        stow.close()

        assert [len(request.parts) for request in server.requests] == [1, 2, 2]  # [ct0, gone], [1, 2], [3, 4]
        assert [part for request in server.requests for part in request.parts] == [p.read_bytes() for p in ct[:5]]
        assert {request.headers["Authorization"] for request in server.requests} == {"Bearer synthetic-token-42"}
    assert _outcomes(results)[1] == (Outcome.REFUSED, "unreadable clean file (FileNotFoundError)")
    assert [outcome for outcome, _ in _outcomes(results)] == [Outcome.DELIVERED, Outcome.REFUSED,
                                                              *[Outcome.DELIVERED] * 4]


def test_https_is_verified_against_the_configured_ca_and_an_untrusted_certificate_waits(
    ct: list[Path], tmp_path: Path
) -> None:
    ca = TestCA(tmp_path / "ca")
    issued = ca.issue("localhost", server=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(issued.certificate, issued.private_key)
    with ScriptedStow(lambda request: (200, "application/dicom+json", b"{}"), tls=tls) as server:
        trusted = _sender(server.url("https", "localhost"), ca_certificates=ca.bundle)
        assert [r.outcome for r in trusted.send(_clean(ct[:1]))] == [Outcome.DELIVERED]
        trusted.close()

        other_ca = TestCA(tmp_path / "other").bundle
        untrusted = _sender(server.url("https", "localhost"), ca_certificates=other_ca)
        assert _outcomes(untrusted.send(_clean(ct[1:2]))) == [
            (Outcome.WAIT, "TLS: the destination's certificate is not trusted (check ca_certificates)")]
        assert len(server.requests) == 1  # nothing was sent to the server it could not verify


def test_a_large_instance_is_streamed_from_disk_not_held_in_memory(ct: list[Path], tmp_path: Path) -> None:
    large = tmp_path / "large.dcm"
    dataset = pydicom.dcmread(ct[0])
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = 2048, 2048, 8
    dataset.PixelData = bytes(2048 * 2048 * 2 * 8)  # 64 MiB
    dataset.save_as(large)
    del dataset
    with ScriptedStow(lambda request: None, discard=True) as server:
        stow = _sender(server.url())
        tracemalloc.start()
        try:
            [result] = stow.send(_clean([large]))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        stow.close()

    assert result.outcome is Outcome.DELIVERED
    assert server.bytes_discarded > large.stat().st_size
    assert peak < 8 * 1024 * 1024  # the sender and the server together held a few 1 MiB chunks at most


def test_a_missing_secret_file_waits_for_the_operator_without_sending(ct: list[Path], tmp_path: Path) -> None:
    with ScriptedStow(lambda request: (200, "application/dicom+json", b"{}")) as server:
        auth = StowAuth(username=USER, password_file=tmp_path / "not-written-yet")
        results = _sender(server.url(), auth=auth).send(_clean(ct[:2]))
        assert server.requests == []
    assert _outcomes(results) == [(Outcome.WAIT, "cannot read the credentials or CA file (FileNotFoundError)")] * 2
