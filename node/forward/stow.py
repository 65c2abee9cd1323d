"""DICOMweb destinations: STOW-RS (PS3.18 10.5) over httpx, one HTTP client kept across batches.

    StowSender(name: str, destination: StowDestination)

`name` is the destination's name in config (it appears in logs). A batch is cut into requests of
at most `destination.batch_size` instances, each one POST of `multipart/related;
type="application/dicom"` to `destination.url` whose parts are the clean files' bytes read from
disk in chunks while they are sent (the body's length is known from the files' sizes, so no part
is held in memory). TLS is verified (against `ca_certificates` when given); basic or bearer
credentials are read from their files whenever a client is made, so a corrected secret is used at
the next batch without a restart. The client is closed after a while without work and on close.

Outcomes (see node.forward.sender; per-instance statuses in node.forward.status):
- 200: every instance DELIVERED (a WarningReason is reported in the detail).
- 202 (some failed) and 409 (all failed): each instance by the response's Failed SOP Sequence
  (0008,1198) with its FailureReason, or its Referenced SOP Sequence (0008,1199); read from
  application/dicom+json or application/dicom+xml. An instance a 202 does not mention is WAIT
  (sent again: a stored copy answers 0x0111 or is replaced); one a 409 does not mention is REFUSED.
- 401, 403, 407 (credentials), 404 and 405 (the URL): WAIT, not REFUSED. Nothing is wrong with
  the instances: an operator fixes the password or the URL, and everything waiting goes through,
  with nothing quarantined meanwhile. The detail says which setting to check.
- 408, 425, 429, 5xx, connection errors, timeouts, an untrusted TLS certificate: WAIT.
- Any other 4xx (400, 413, 415, 422 ...): REFUSED. For a request of several instances the answer
  does not say which one was refused, so each is then sent alone, and only the ones refused alone
  are REFUSED: one bad instance does not take its batch-mates to quarantine.
"""

from __future__ import annotations

import json
import ssl
import time
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog
from pydicom.filereader import read_file_meta_info

from node.config import StowDestination, TLSSettings
from node.forward.sender import CleanFile, Outcome, SendResult
from node.forward.status import DUPLICATE_SOP_INSTANCE, status_result, unreadable_file
from node.network import client_tls_context

log = structlog.get_logger(__name__)

CHUNK_BYTES = 1024 * 1024  # read from disk and written to the socket this much at a time
ACCEPT = "application/dicom+json, application/dicom+xml;q=0.9, application/json;q=0.8"
OPERATOR_STATUSES = {401: "credentials refused (check auth)", 403: "forbidden (check auth)",
                     407: "proxy credentials refused", 404: "not found (check url)",
                     405: "method not allowed (check url: the .../studies endpoint)"}
TRANSIENT_STATUSES = frozenset({408, 425, 429})

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"


@dataclass(frozen=True)
class _Part:
    """One clean file as it goes into the request body."""

    path: Path
    sop_instance: str
    size: int


@dataclass(frozen=True)
class StowAnswer:
    """What a STOW-RS response says per SOP Instance UID: its FailureReason, or its WarningReason
    (None where the item gives none)."""

    failed: dict[str, int | None]
    stored: dict[str, int | None]


def _read_part(clean: CleanFile) -> _Part | SendResult:
    try:
        meta = read_file_meta_info(clean.path)
        return _Part(clean.path, str(meta.MediaStorageSOPInstanceUID), clean.path.stat().st_size)
    except Exception as exc:  # noqa: BLE001 - a missing or damaged file fails alone, not its request
        return unreadable_file(exc)


class _Body:
    """A multipart/related body streamed from the files: its length first, then its bytes."""

    def __init__(self, parts: Sequence[_Part]) -> None:
        self.boundary = uuid.uuid4().hex
        self.parts = parts
        self._head = f"--{self.boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        self._tail = f"--{self.boundary}--\r\n".encode()

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="application/dicom"; boundary={self.boundary}'

    def __len__(self) -> int:
        return sum(len(self._head) + part.size + 2 for part in self.parts) + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        for part in self.parts:
            yield self._head
            with part.path.open("rb") as stream:
                while chunk := stream.read(CHUNK_BYTES):
                    yield chunk
            yield b"\r\n"
        yield self._tail


def _code(value: object) -> int | None:
    """A FailureReason or WarningReason (US): an integer, in JSON a number or a numeric string."""
    text = str(value).strip() if isinstance(value, int | str) else ""
    return int(text) if text.isdigit() else None


def _json_items(dataset: dict[str, object], tag: str) -> list[dict[str, object]]:
    element = dataset.get(tag)
    values = element.get("Value", []) if isinstance(element, dict) else []
    return [item for item in values if isinstance(item, dict)]


def _json_value(item: dict[str, object], tag: str) -> object:
    element = item.get(tag)
    values = element.get("Value", []) if isinstance(element, dict) else []
    return values[0] if values else None


def _from_json(text: str) -> StowAnswer:
    document = json.loads(text)
    dataset = document[0] if isinstance(document, list) and document else document
    if not isinstance(dataset, dict):
        raise ValueError("not a DICOM JSON dataset")

    def by_uid(sequence: str, reason: str) -> dict[str, int | None]:
        found = {}
        for item in _json_items(dataset, sequence):
            uid, code = _json_value(item, REFERENCED_SOP_INSTANCE_UID), _json_value(item, reason)
            if uid is not None:
                found[str(uid)] = _code(code)
        return found

    return StowAnswer(by_uid(FAILED_SOP_SEQUENCE, FAILURE_REASON), by_uid(REFERENCED_SOP_SEQUENCE, WARNING_REASON))


def _from_xml(text: str) -> StowAnswer:
    """The Native DICOM Model (PS3.19 A.1): DicomAttribute elements by tag, Item, Value."""
    root = ElementTree.fromstring(text)

    def local(element: ElementTree.Element) -> str:
        return element.tag.rsplit("}", 1)[-1]

    def attribute(parent: ElementTree.Element, tag: str) -> ElementTree.Element | None:
        return next((child for child in parent if local(child) == "DicomAttribute" and child.get("tag") == tag), None)

    def first_value(parent: ElementTree.Element, tag: str) -> str | None:
        element = attribute(parent, tag)
        value = next((child for child in element if local(child) == "Value"), None) if element is not None else None
        return value.text.strip() if value is not None and value.text else None

    def by_uid(sequence: str, reason: str) -> dict[str, int | None]:
        element = attribute(root, sequence)
        found = {}
        for item in (child for child in ([] if element is None else element) if local(child) == "Item"):
            uid, code = first_value(item, REFERENCED_SOP_INSTANCE_UID), first_value(item, reason)
            if uid is not None:
                found[uid] = _code(code)
        return found

    return StowAnswer(by_uid(FAILED_SOP_SEQUENCE, FAILURE_REASON), by_uid(REFERENCED_SOP_SEQUENCE, WARNING_REASON))


def parse_answer(response: httpx.Response) -> StowAnswer:
    """The per-instance answer in a STOW-RS response body (empty when there is none to read)."""
    media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    try:
        if media_type.endswith("json"):
            return _from_json(response.text)
        if media_type.endswith("xml"):
            return _from_xml(response.text)
    except (ValueError, ElementTree.ParseError) as exc:
        log.warning("stow_response_unreadable", status=response.status_code, error=type(exc).__name__)
    return StowAnswer({}, {})


def _failed(reason: int | None, http: str) -> SendResult:
    """An instance in the Failed SOP Sequence, by its FailureReason. It was not stored, whatever
    the code, except 0x0111: the server already holds that instance."""
    if reason is None:  # the server does not say why: not something a resend can mend
        return SendResult(Outcome.REFUSED, f"{http}: failed, no reason given")
    said = status_result(reason)
    outcome = Outcome.REFUSED if said.stored and reason != DUPLICATE_SOP_INSTANCE else said.outcome
    return SendResult(outcome, f"{http} {said.detail}")


def _per_instance(response: httpx.Response, parts: Sequence[_Part]) -> list[SendResult]:
    """200, 202 or 409: each instance by what the response says of it."""
    answer = parse_answer(response)
    http = f"HTTP {response.status_code}"
    unmentioned = {200: SendResult(Outcome.DELIVERED, http),
                   202: SendResult(Outcome.WAIT, f"{http}: instance not in the response"),
                   409: SendResult(Outcome.REFUSED, f"{http}: conflict")}[response.status_code]
    results = []
    for part in parts:
        if part.sop_instance in answer.failed:
            results.append(_failed(answer.failed[part.sop_instance], http))
        elif part.sop_instance in answer.stored:
            warning = answer.stored[part.sop_instance]
            detail = f"{http} {status_result(warning).detail}" if warning else http
            results.append(SendResult(Outcome.DELIVERED, detail))
        else:
            results.append(unmentioned)
    return results


def _whole_request(status: int) -> SendResult:
    """An HTTP status that answers for the whole request (see the module docstring)."""
    http = f"HTTP {status}"
    if status in OPERATOR_STATUSES:
        return SendResult(Outcome.WAIT, f"{http}: {OPERATOR_STATUSES[status]}")
    if status in TRANSIENT_STATUSES or status >= 500:
        return SendResult(Outcome.WAIT, http)
    if 400 <= status < 500:
        return SendResult(Outcome.REFUSED, http)
    return SendResult(Outcome.WAIT, f"{http}: unexpected (check url)")  # 1xx, 3xx: redirects are not followed


def _transport_failure(exc: httpx.RequestError) -> SendResult:
    """No answer, or none that can be read: the network, the server or TLS; always WAIT."""
    if isinstance(exc, httpx.TimeoutException):
        return SendResult(Outcome.WAIT, f"timeout ({type(exc).__name__})")
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return SendResult(Outcome.WAIT, "TLS: the destination's certificate is not trusted (check ca_certificates)")
    return SendResult(Outcome.WAIT, f"connection failed ({type(exc).__name__})")


class StowSender:
    """Sends batches of clean files to one DICOMweb server. Not thread-safe: one forwarder loop uses it."""

    def __init__(self, name: str, destination: StowDestination) -> None:
        self._name = name
        self.destination = destination
        self._client: httpx.Client | None = None
        self._last_used = 0.0

    @property
    def name(self) -> str:
        return self._name

    def send(self, files: Sequence[CleanFile]) -> list[SendResult]:
        """One result per file, in order. Never raises for a file or the destination."""
        size = self.destination.batch_size
        results: list[SendResult] = []
        for start in range(0, len(files), size):
            results.extend(self._send_request(files[start:start + size]))
        return results

    def release_if_idle(self, now: float, idle_seconds: float) -> bool:
        """Close the client (its kept-alive connections) after `idle_seconds` without a request."""
        if self._client is None or now - self._last_used < idle_seconds:
            return False
        self.close()
        return True

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _send_request(self, files: Sequence[CleanFile]) -> list[SendResult]:
        read = [_read_part(clean) for clean in files]
        parts = [item for item in read if isinstance(item, _Part)]
        if not parts:
            return [item for item in read if isinstance(item, SendResult)]
        answer = self._post(parts)
        if isinstance(answer, SendResult) and answer.outcome is Outcome.REFUSED and len(parts) > 1:
            log.info("stow_request_refused", destination=self.name, reason=answer.detail, instances=len(parts))
            sent = [self._post_alone(part) for part in parts]  # which of them was it?
        else:
            sent = answer if isinstance(answer, list) else [answer] * len(parts)
        by_part = dict(zip(map(id, parts), sent, strict=True))
        return [by_part[id(item)] if isinstance(item, _Part) else item for item in read]

    def _post_alone(self, part: _Part) -> SendResult:
        answer = self._post([part])
        return answer[0] if isinstance(answer, list) else answer

    def _post(self, parts: Sequence[_Part]) -> list[SendResult] | SendResult:
        """One STOW-RS request: a result per part, or one result for the whole request."""
        body = _Body(parts)
        headers = {"Content-Type": body.content_type, "Content-Length": str(len(body)), "Accept": ACCEPT}
        try:
            client = self._client_now()
        except OSError as exc:  # a secret or CA file missing or damaged (ssl.SSLError too): the operator fixes it
            return SendResult(Outcome.WAIT, f"cannot read the credentials or CA file ({type(exc).__name__})")
        started = time.monotonic()
        try:
            response = client.post(self.destination.url, content=iter(body), headers=headers)
        except (httpx.RequestError, OSError) as exc:
            failure = (_transport_failure(exc) if isinstance(exc, httpx.RequestError)
                       else SendResult(Outcome.WAIT, f"a file failed while it was sent ({type(exc).__name__})"))
            log.warning("stow_failed", destination=self.name, reason=failure.detail, instances=len(parts))
            self.close()  # a fresh connection next time
            return failure
        finally:
            self._last_used = time.monotonic()
        log.info("stow_request", destination=self.name, status=response.status_code, instances=len(parts),
                 seconds=round(self._last_used - started, 3))
        if response.status_code in (200, 202, 409):
            return _per_instance(response, parts)
        failure = _whole_request(response.status_code)
        if response.status_code in OPERATOR_STATUSES:
            self.close()  # the next client reads the credentials files again
        return failure

    def _client_now(self) -> httpx.Client:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> httpx.Client:
        destination = self.destination
        verify: ssl.SSLContext | bool = False
        if destination.verify_tls:  # the same checks as DICOM TLS: the CA bundle (else the system's), TLS 1.2+
            verify = client_tls_context(TLSSettings(ca_certificates=destination.ca_certificates))
        auth: httpx.Auth | None = None
        headers = {}
        if destination.auth is not None and destination.auth.bearer_token_file is not None:
            headers["Authorization"] = f"Bearer {_secret(destination.auth.bearer_token_file)}"
        elif destination.auth is not None and destination.auth.username is not None:
            password = _secret(destination.auth.password_file) if destination.auth.password_file else ""
            auth = httpx.BasicAuth(destination.auth.username, password)
        return httpx.Client(verify=verify, auth=auth, headers=headers, follow_redirects=False,
                            timeout=httpx.Timeout(destination.timeout_seconds))


def _secret(path: Path) -> str:
    """A password or token kept in a file (mode 0600): its content without the final newline."""
    return path.read_text().strip()
