"""The C-STORE SCU keeps one association across batches, opens another only when a batch needs a
presentation context the open one lacks or the destination dropped it, and answers per file.

Against real peers: the benchmark sink (pynetdicom), Orthanc and dcmtk's storescp.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dsutils import split_dataset
from pynetdicom.events import Event
from pynetdicom.sop_class import RTPlanStorage  # type: ignore[attr-defined]

from bench.sink import Sink
from node.config import Destination
from node.forward.dimse import DimseSender
from node.forward.sender import CleanFile, Outcome
from tests.nodeproc import wait_until
from tests.servers import Orthanc, free_port, storage_peer, unavailable, wait_for_port
from tests.synthetic import write_series

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
# Other SOP classes and transfer syntaxes: RT Plan in implicit VR, RLE, JPEG-LS lossless.
OTHERS = ("rtplan.dcm", "SC_rgb_rle.dcm", "MR_small_jpeg_ls_lossless.dcm")
RLE = "SC_rgb_rle.dcm"  # dcmtk's storescp accepts uncompressed transfer syntaxes only, by default
# What the destination's refusal of that pair reads (UIDs only): quarantined, not retried as an outage.
RLE_REFUSED = ("refused: presentation context not accepted: 1.2.840.10008.5.1.4.1.1.7 "
               "in 1.2.840.10008.1.2.5")


def _testdata(name: str) -> Path:
    return Path(str(get_testdata_file(name)))


def _scu(port: int, ae_title: str = "SINK", timeout: float = 10) -> DimseSender:
    return DimseSender("peer", Destination(ae_title=ae_title, host="127.0.0.1", port=port),
                       calling_ae_title="DEID_NODE", timeout=timeout)


def _send(scu: DimseSender, files: Sequence[Path]) -> list[str]:
    """Each file's result: its status code when delivered, else the outcome and the reason."""
    results = scu.send([CleanFile(path, CT_IMAGE) for path in files])
    return [result.detail if result.outcome is Outcome.DELIVERED else f"{result.outcome.value}: {result.detail}"
            for result in results]


def _batches(files: Sequence[Path], size: int) -> list[Sequence[Path]]:
    return [files[i:i + size] for i in range(0, len(files), size)]


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    with Sink(free_port(), tmp_path / "sink") as server:
        yield server


@pytest.fixture
def ct(tmp_path: Path) -> list[Path]:
    return write_series(tmp_path / "ct", 18)


@pytest.fixture(scope="module")
def few_ct(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eight CT files, written once for the tests that only read them."""
    return write_series(tmp_path_factory.mktemp("ct"), 8)


class AbortingSink(Sink):
    """The sink, but it answers chosen C-STOREs with an A-ABORT (as a PACS that fails or restarts)."""

    def __init__(self, port: int, out_dir: Path) -> None:
        super().__init__(port, out_dir)
        self.abort_in: int | None = None  # abort the association at this many C-STOREs from now (1: the next)

    def _store(self, event: Event) -> int:
        if self.abort_in is not None:
            self.abort_in -= 1
            if self.abort_in == 0:
                self.abort_in = None
                event.assoc.abort(block=False)
                return 0xA700
        return super()._store(event)


def test_three_batches_of_ct_share_one_association_and_arrive_as_sent(sink: Sink, ct: list[Path]) -> None:
    scu = _scu(sink.port)
    details = [_send(scu, batch) for batch in _batches(ct, 6)]

    assert details == [["0x0000"] * 6] * 3
    assert sink.count == 18
    assert sink.associations == 1
    assert sink.open_associations == 1  # kept for the next batch
    received = {}
    for path in (sink.out_dir).iterdir():
        meta, offset = split_dataset(path)
        received[str(meta.MediaStorageSOPInstanceUID)] = path.read_bytes()[offset:]
    for path in ct:  # streamed from disk: the dataset bytes, unchanged
        meta, offset = split_dataset(path)
        assert received[str(meta.MediaStorageSOPInstanceUID)] == path.read_bytes()[offset:]
    scu.close()
    assert wait_until(lambda: sink.open_associations == 0, timeout=10, interval=0.05)


def test_a_batch_with_a_new_sop_class_or_syntax_opens_a_second_association_that_keeps_the_first(
    sink: Sink, ct: list[Path]
) -> None:
    scu = _scu(sink.port)
    assert _send(scu, ct[:6]) == ["0x0000"] * 6
    assert _send(scu, ct[6:9]) == ["0x0000"] * 3
    assert sink.associations == 1

    mixed = [*ct[9:11], *(_testdata(name) for name in OTHERS)]
    assert _send(scu, mixed) == ["0x0000"] * 5
    assert sink.associations == 2

    # The second association proposed the CT pair too: neither kind alone needs a third.
    assert _send(scu, ct[11:]) == ["0x0000"] * 7
    assert _send(scu, [_testdata(OTHERS[0])]) == ["0x0000"]
    assert sink.associations == 2
    assert sink.count == 18 + len(OTHERS) + 1
    scu.close()


def test_an_unreadable_file_fails_alone(sink: Sink, ct: list[Path], tmp_path: Path) -> None:
    not_dicom = tmp_path / "not-dicom.dcm"
    not_dicom.write_text("not a DICOM file")
    details = _send(_scu(sink.port), [ct[0], tmp_path / "missing.dcm", not_dicom, ct[1]])

    assert details[0] == details[3] == "0x0000"
    assert details[1] == "refused: unreadable clean file (FileNotFoundError)"
    assert details[2].startswith("refused: unreadable clean file (")
    assert sink.count == 2


def test_when_the_destination_is_down_every_file_fails_and_the_next_batch_gets_through(
    ct: list[Path], tmp_path: Path
) -> None:
    port = free_port()  # nothing listens
    scu = _scu(port)
    assert _send(scu, ct[:6]) == ["wait: destination unreachable"] * 6

    with Sink(port, tmp_path / "sink") as sink:
        assert _send(scu, ct[6:12]) == ["0x0000"] * 6
        assert sink.count == 6


def test_the_idle_association_is_released_after_the_idle_seconds(sink: Sink, ct: list[Path]) -> None:
    scu = _scu(sink.port)
    assert _send(scu, ct[:3]) == ["0x0000"] * 3
    assert not scu.release_if_idle(time.monotonic(), idle_seconds=0.5)
    assert sink.open_associations == 1

    time.sleep(0.5)
    assert scu.release_if_idle(time.monotonic(), idle_seconds=0.5)
    assert wait_until(lambda: sink.open_associations == 0, timeout=10, interval=0.05)
    assert not scu.release_if_idle(time.monotonic(), idle_seconds=0.5)  # nothing left to release

    assert _send(scu, ct[3:6]) == ["0x0000"] * 3
    assert sink.associations == 2


@pytest.fixture
def aborting(tmp_path: Path) -> Iterator[AbortingSink]:
    with AbortingSink(free_port(), tmp_path / "aborting") as server:
        yield server


def test_after_the_association_is_lost_mid_batch_the_rest_fail_and_the_next_batch_opens_a_fresh_one(
    aborting: AbortingSink, ct: list[Path]
) -> None:
    scu = _scu(aborting.port)
    aborting.abort_in = 3
    assert _send(scu, ct[:6]) == ["0x0000"] * 2 + ["wait: association lost"] * 4

    assert _send(scu, ct[2:6]) == ["0x0000"] * 4  # the four lost ones again
    assert (aborting.associations, aborting.count) == (2, 6)


def test_a_reused_association_dropped_at_the_first_instance_is_replaced_within_the_batch(
    aborting: AbortingSink, ct: list[Path]
) -> None:
    scu = _scu(aborting.port)
    assert _send(scu, ct[:6]) == ["0x0000"] * 6
    aborting.abort_in = 1  # the peer drops it just as the next batch starts: unnoticed until sending

    assert _send(scu, ct[6:12]) == ["0x0000"] * 6
    assert (aborting.associations, aborting.count) == (2, 12)


@pytest.mark.e2e
@pytest.mark.skipif(bool(unavailable("orthanc")), reason=str(unavailable("orthanc")))
def test_a_batch_after_the_destination_restarted_is_stored_on_a_new_association(ct: list[Path]) -> None:
    with Orthanc() as pacs:
        scu = _scu(pacs.dicom_port, ae_title=pacs.aet)
        assert _send(scu, ct[:6]) == ["0x0000"] * 6
        pacs.stop()
        pacs.start()

        assert _send(scu, ct[6:12]) == ["0x0000"] * 6
        assert pacs.count() == 12
        scu.close()


class IdleClosingOrthanc(Orthanc):
    """Orthanc that closes an association after `idle_seconds` without traffic (DicomScpTimeout)."""

    def __init__(self, idle_seconds: int) -> None:
        super().__init__()
        self.idle_seconds = idle_seconds

    def _prepare(self) -> None:
        super()._prepare()
        path = self.directory / "orthanc.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "DicomScpTimeout": self.idle_seconds}))


@pytest.mark.e2e
@pytest.mark.skipif(bool(unavailable("orthanc")), reason=str(unavailable("orthanc")))
def test_an_association_the_destination_closed_for_idleness_is_replaced(ct: list[Path]) -> None:
    with IdleClosingOrthanc(idle_seconds=1) as pacs:
        scu = _scu(pacs.dicom_port, ae_title=pacs.aet)
        assert _send(scu, ct[:6]) == ["0x0000"] * 6
        time.sleep(3)  # Orthanc drops it after 1 s idle

        assert _send(scu, ct[6:12]) == ["0x0000"] * 6
        assert pacs.count() == 12


@contextmanager
def _storescp(port: int, out_dir: Path) -> Iterator[Path]:
    """dcmtk's storescp with its defaults (uncompressed transfer syntaxes only); yields its log."""
    out_dir.mkdir()
    log = out_dir.parent / "storescp.log"
    with log.open("wb") as sink, subprocess.Popen(["storescp", "-v", "-aet", "STORESCP", "-od", str(out_dir),
                                                   str(port)], stdout=sink, stderr=subprocess.STDOUT) as process:
        try:
            wait_for_port(port, timeout=10)
            yield log
        finally:
            process.terminate()


@pytest.mark.skipif(bool(unavailable("dcmtk")), reason=str(unavailable("dcmtk")))
def test_a_pair_the_destination_rejects_fails_only_its_files_without_a_new_association_per_file(
    ct: list[Path], tmp_path: Path
) -> None:
    port = free_port()
    with _storescp(port, tmp_path / "received") as log:
        scu = _scu(port, ae_title="STORESCP")
        rle = _testdata(RLE)

        def associations() -> int:
            return len(re.findall(r"Association Acknowledged", log.read_text()))

        details = _send(scu, [ct[0], rle, ct[1], rle, rle, ct[2]])
        assert details == ["0x0000", RLE_REFUSED, "0x0000",
                           RLE_REFUSED, RLE_REFUSED, "0x0000"]
        assert _send(scu, ct[3:6]) == ["0x0000"] * 3  # the accepted pairs: same association
        assert associations() == 1

        # A later batch asks again (the destination may have been reconfigured): once for the batch.
        assert _send(scu, [rle, ct[6], rle]) == [RLE_REFUSED, "0x0000", RLE_REFUSED]
        assert associations() == 2
        assert len(list((tmp_path / "received").iterdir())) == 7


def test_a_peer_that_does_not_take_the_sop_class_refuses_those_files_for_cause_not_as_an_outage(
    few_ct: list[Path]
) -> None:
    rtplan = _testdata(OTHERS[0])
    ct_refused = f"refused: presentation context not accepted: {CT_IMAGE} in {ExplicitVRLittleEndian}"
    with storage_peer([RTPlanStorage]) as port:
        scu = _scu(port)
        # An association that takes nothing proposed (pynetdicom aborts it): each file refused with its pair.
        assert _send(scu, few_ct[:2]) == [ct_refused] * 2
        # One that takes some: the others stored on it.
        assert _send(scu, [few_ct[2], rtplan, few_ct[3]]) == [ct_refused, "0x0000", ct_refused]


def test_each_c_store_status_is_delivered_waited_on_or_refused_with_the_destinations_comment(
    few_ct: list[Path]
) -> None:
    answers = [(0xA900, "IOD does not match SOP class"), (0xC000, "cannot parse\ndataset"),
               (0xA700, "disk full"), (0xB000, ""), (0x0122, ""), (0x0110, ""), (0x0111, ""), (0x0000, "")]
    pending = list(answers)

    def store(event: Event) -> Dataset:
        code, comment = pending.pop(0)
        status = Dataset()
        status.Status = code
        if comment:
            status.ErrorComment = comment
        return status

    with storage_peer([CT_IMAGE], store) as port:
        results = _scu(port).send([CleanFile(path, CT_IMAGE) for path in few_ct[:len(answers)]])

    assert [(r.outcome, r.detail) for r in results] == [
        (Outcome.REFUSED, "0xA900 Data Set Does Not Match SOP Class: IOD does not match SOP class"),
        (Outcome.REFUSED, "0xC000 Cannot Understand: cannot parse dataset"),
        (Outcome.WAIT, "0xA700 Refused: Out of Resources: disk full"),
        (Outcome.DELIVERED, "0xB000 Coercion of Data Elements"),
        (Outcome.REFUSED, "0x0122 Refused: SOP Class Not Supported"),
        (Outcome.WAIT, "0x0110 Processing Failure"),
        (Outcome.DELIVERED, "0x0111 Duplication SOP Instance"),
        (Outcome.DELIVERED, "0x0000"),
    ]


def test_an_association_rejected_permanently_or_transiently_is_waited_on_with_the_reason(
    few_ct: list[Path]
) -> None:
    with storage_peer([CT_IMAGE], require_calling_aet=["ANOTHER_NODE"]) as port:
        [result] = _scu(port).send([CleanFile(few_ct[0], CT_IMAGE)])
    # Our AE title unknown there: an operator fixes the peer's configuration; nothing is quarantined.
    assert (result.outcome, result.detail) == (
        Outcome.WAIT, "association rejected (rejected permanent, service user: calling ae title not recognised)")

    with storage_peer([CT_IMAGE], maximum_associations=1) as port:
        holder = _scu(port)
        assert _send(holder, few_ct[:1]) == ["0x0000"]  # its association stays open: the peer is full
        [result] = _scu(port).send([CleanFile(few_ct[1], CT_IMAGE)])
        holder.close()
    assert (result.outcome, result.detail) == (
        Outcome.WAIT, "association rejected (rejected transient, service provider (presentation): "
                      "local limit exceeded)")
