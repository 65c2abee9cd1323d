"""The benchmark sink stores every instance exactly as it came off the wire, and counts it.

"Exactly as it came off the wire" is checked against dcmtk's storescp in bit-preserving mode (+B)
receiving the same files from the same storescu: storescu re-encodes some files while sending
(it drops group lengths, for one), so the files on disk before sending are not the reference.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.filereader import read_file_meta_info

from bench.sink import Sink
from tests.servers import free_port, free_ports, storescu, unavailable, wait_for_port

REPO = Path(__file__).resolve().parents[2]
# Five instances in five transfer syntaxes: explicit and implicit little endian, RLE, JPEG-LS, J2K.
FILES = ("CT_small.dcm", "rtplan.dcm", "SC_rgb_rle.dcm", "MR_small_jpeg_ls_lossless.dcm", "693_J2KR.dcm")

pytestmark = pytest.mark.skipif(bool(unavailable("dcmtk")), reason=str(unavailable("dcmtk")))


def _testdata(name: str) -> Path:
    return Path(str(get_testdata_file(name)))


def _dataset_bytes(path: Path) -> bytes:
    """The encoded dataset that follows the file meta group, whose length (0002,0000) states."""
    data = path.read_bytes()
    assert data[128:136] == b"DICM\x02\x00\x00\x00", f"{path.name}: no file meta group length"
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]


def _datasets_by_instance(directory: Path) -> dict[str, bytes]:
    return {str(read_file_meta_info(path).MediaStorageSOPInstanceUID): _dataset_bytes(path)
            for path in directory.iterdir()}  # fmt: skip


@contextmanager
def _bit_preserving_storescp(port: int, out_dir: Path) -> Iterator[None]:
    out_dir.mkdir()
    command = ["storescp", "-aet", "REFERENCE", "+xa", "+B", "-od", str(out_dir), str(port)]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        try:
            wait_for_port(port, timeout=10)
            yield
        finally:
            process.terminate()


def test_sink_writes_each_instance_byte_for_byte_as_received(tmp_path: Path) -> None:
    files = [_testdata(name) for name in FILES]
    reference_port, sink_port = free_ports(2)
    with _bit_preserving_storescp(reference_port, tmp_path / "reference"):
        storescu(files, reference_port, called_ae="REFERENCE")
    with Sink(sink_port, tmp_path / "sink") as sink:
        storescu(files, sink_port, called_ae="SINK")

    assert sink.count == len(FILES)
    assert len(list((tmp_path / "sink").iterdir())) == len(FILES)
    assert _datasets_by_instance(tmp_path / "sink") == _datasets_by_instance(tmp_path / "reference")


def test_sink_script_reports_its_count_when_told_to_stop(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, str(REPO / "bench" / "sink.py"), "--port", str(port), "--out", str(tmp_path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["event"] == "listening"
        storescu([_testdata(name) for name in FILES[:2]], port, called_ae="SINK")
        process.send_signal(signal.SIGTERM)
        report = json.loads(process.stdout.readline())

    assert process.returncode == 0
    assert report["received"] == 2
    assert report["bytes"] == sum(path.stat().st_size for path in tmp_path.iterdir())
