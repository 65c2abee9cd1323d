"""The test peers behave like the real thing: Orthanc stores what dcmtk sends, as sent, and survives a
restart or a crash; PostgreSQL answers SQL, keeps its data across a restart and is gone once its block
ends; a missing program is named so that tests skip with a reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.data import get_testdata_file

from tests import servers
from tests.servers import Orthanc, PostgresServer, echoscu, storescu, unavailable

# Explicit VR little endian, JPEG-LS lossless, JPEG 2000 lossless, RLE and JPEG baseline: distinct
# instances, all with the patient/study/series identifiers Orthanc insists on.
MIXED_SYNTAXES = (
    "CT_small.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "693_J2KR.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_small_odd_jpeg.dcm",
)


def _needs(*tools: str) -> pytest.MarkDecorator:
    reasons = [reason for tool in tools if (reason := unavailable(tool))]
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons))


def _testdata(name: str) -> Path:
    return Path(str(get_testdata_file(name)))


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie nobody reaped has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# A test run that is killed outright: it starts both servers, reports them, and SIGKILLs itself.
_KILLED_RUN = """
import json, os, signal
from tests.servers import Orthanc, PostgresServer
orthanc, postgres = Orthanc().__enter__(), PostgresServer().__enter__()
print(json.dumps({"pids": [orthanc._process.pid, postgres._process.pid],
                  "directories": [str(orthanc.directory), str(postgres.directory)]}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _stored_by_sop_instance(orthanc: Orthanc) -> dict[str, pydicom.Dataset]:
    datasets = (orthanc.dataset(instance) for instance in orthanc.instances())
    return {str(ds.SOPInstanceUID): ds for ds in datasets}


def test_a_missing_program_is_named_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(servers._TOOLS, "orthanc", ("/nonexistent/Orthanc",))

    reason = unavailable("orthanc")

    assert reason is not None
    assert "/nonexistent/Orthanc" in reason
    assert "scripts/install-system.sh" in reason


@pytest.mark.e2e
@_needs("orthanc", "dcmtk")
def test_orthanc_stores_each_file_in_its_own_transfer_syntax_with_pixels_untouched() -> None:
    files = [_testdata(name) for name in MIXED_SYNTAXES]
    with Orthanc() as orthanc:
        storescu(files, orthanc.dicom_port, called_ae=orthanc.aet)

        assert orthanc.wait_for_count(len(files), timeout=10) == len(files)
        stored = _stored_by_sop_instance(orthanc)
        for path in files:
            sent = pydicom.dcmread(path)
            received = stored[str(sent.SOPInstanceUID)]
            assert received.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID, path.name
            assert received.PixelData == sent.PixelData, path.name


@pytest.mark.e2e
@_needs("orthanc", "dcmtk")
def test_orthanc_rest_views_agree_with_the_sent_file() -> None:
    sent = pydicom.dcmread(_testdata("CT_small.dcm"))
    with Orthanc() as orthanc:
        storescu([_testdata("CT_small.dcm")], orthanc.dicom_port, called_ae=orthanc.aet)
        orthanc.wait_for_count(1, timeout=10)
        (instance,) = orthanc.instances()

        tags = orthanc.simplified_tags(instance)
        assert tags["SOPInstanceUID"] == sent.SOPInstanceUID
        assert tags["StudyInstanceUID"] == sent.StudyInstanceUID
        assert orthanc.file(instance)[128:132] == b"DICM"


@pytest.mark.e2e
@_needs("orthanc", "dcmtk")
def test_orthanc_down_refuses_stores_and_after_restart_keeps_ports_and_instances() -> None:
    first, second = _testdata("CT_small.dcm"), _testdata("MR_small_jp2klossless.dcm")
    with Orthanc() as orthanc:
        storescu([first], orthanc.dicom_port, called_ae=orthanc.aet)
        ports = (orthanc.dicom_port, orthanc.http_port)

        orthanc.stop()
        while_down = storescu([second], orthanc.dicom_port, called_ae=orthanc.aet, check=False)
        orthanc.start()

        assert while_down.returncode != 0
        assert (orthanc.dicom_port, orthanc.http_port) == ports
        assert orthanc.count() == 1
        storescu([second], orthanc.dicom_port, called_ae=orthanc.aet)
        assert orthanc.wait_for_count(2, timeout=10) == 2


@pytest.mark.e2e
@_needs("orthanc", "dcmtk")
def test_orthanc_killed_mid_run_comes_back_with_what_it_had_stored() -> None:
    with Orthanc() as orthanc:
        storescu([_testdata("CT_small.dcm")], orthanc.dicom_port, called_ae=orthanc.aet)
        orthanc.kill()
        orthanc.start()

        assert orthanc.count() == 1


@pytest.mark.e2e
@_needs("orthanc", "dcmtk")
def test_orthanc_refuses_a_caller_that_names_another_called_ae_title() -> None:
    with Orthanc() as orthanc:
        wrong = storescu([_testdata("CT_small.dcm")], orthanc.dicom_port, called_ae="NOT_THE_PACS", check=False)

        assert wrong.returncode != 0
        assert orthanc.count() == 0
        assert echoscu(orthanc.dicom_port, called_ae="NOT_THE_PACS").returncode != 0
        assert echoscu(orthanc.dicom_port, called_ae=orthanc.aet).returncode == 0


@pytest.mark.postgres
@_needs("postgres")
def test_postgres_runs_sql_in_a_new_database_and_is_gone_after_the_block() -> None:
    with PostgresServer() as postgres:
        engine = sa.create_engine(postgres.create_database("deid_test"))
        with engine.connect() as connection:
            assert connection.execute(sa.text("select current_database(), 1")).one() == ("deid_test", 1)
        engine.dispose()
        directory = postgres.directory

    assert not directory.exists()
    engine = sa.create_engine(postgres.url(), connect_args={"connect_timeout": 2})
    with pytest.raises(sa.exc.OperationalError):
        engine.connect()


@pytest.mark.postgres
@_needs("postgres")
def test_postgres_restart_keeps_its_port_and_committed_rows() -> None:
    with PostgresServer() as postgres:
        engine = sa.create_engine(postgres.url(), poolclass=sa.pool.NullPool)
        with engine.begin() as connection:
            connection.execute(sa.text("create table survivors (n int)"))
            connection.execute(sa.text("insert into survivors values (7)"))
        port = postgres.port

        postgres.stop()
        with pytest.raises(sa.exc.OperationalError):
            engine.connect()
        postgres.start()

        assert postgres.port == port
        with engine.connect() as connection:
            assert connection.execute(sa.text("select n from survivors")).scalar_one() == 7


@pytest.mark.e2e
@_needs("orthanc", "postgres")
def test_servers_of_a_killed_test_run_do_not_outlive_it() -> None:
    run = subprocess.run([sys.executable, "-c", _KILLED_RUN], cwd=Path(__file__).parent.parent,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    started = json.loads(run.stdout)
    for directory in started["directories"]:
        shutil.rmtree(directory, ignore_errors=True)

    deadline = time.monotonic() + 10
    while any(map(_running, started["pids"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in started["pids"] if _running(pid)]
