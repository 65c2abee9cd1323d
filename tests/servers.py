"""Real peers for the tests: Orthanc as the research PACS, PostgreSQL as the shared store, dcmtk as the modality.

Each server runs as a plain child process on 127.0.0.1, on free high ports, in a private temporary
directory, so that tests prove behaviour against the software a site runs rather than against
mocks, and two test runs on one machine never share state. These are plain context managers; a
conftest wraps them in fixtures.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pydicom
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.events import Event

ORTHANC_BINARY = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")  # Debian's orthanc-dicomweb
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGRES_USER = "postgres"

# What each test peer needs on PATH or on disk, so a test can skip with a reason instead of failing.
_TOOLS: dict[str, tuple[str, ...]] = {
    "orthanc": (str(ORTHANC_BINARY),),
    "orthanc-dicomweb": (str(ORTHANC_BINARY), str(DICOMWEB_PLUGIN)),
    "postgres": tuple(str(POSTGRES_BIN / name) for name in ("initdb", "postgres", "pg_isready", "createdb")),
    "dcmtk": ("storescu", "echoscu", "storescp"),
    "chromium": ("/usr/bin/chromium", "/usr/bin/chromedriver"),  # Debian's chromium, chromium-driver
}
_INSTALL_HINT = "install it with scripts/install-system.sh"


def unavailable(tool: str) -> str | None:
    """Why `tool` ("orthanc", "orthanc-dicomweb", "postgres" or "dcmtk") cannot run on this machine, or None
    when it can."""
    missing = [name for name in _TOOLS[tool]
               if shutil.which(name) is None and not (name.endswith(".so") and Path(name).is_file())]
    return f"{tool} is not installed ({', '.join(missing)} missing): {_INSTALL_HINT}" if missing else None


def _no_nagle_env() -> dict[str, str]:
    """The environment for the servers and dcmtk tools (Orthanc is a dcmtk program), Nagle's algorithm off.

    Debian's dcmtk leaves it on: the last small packet of each instance then waits for the peer's
    delayed ACK, and one association carries about 20 instances a second instead of over 100.
    """
    return {**os.environ, "TCP_NODELAY": "1"}


def _dies_with_us(*command: str, user: str | None = None) -> list[str]:
    """`command` (as `user`), killed by the kernel when the process that started it ends, even by SIGKILL.

    A test run that is killed (a CI timeout, Ctrl-C twice) then leaves no server behind. The signal
    follows the starting thread: start servers from the main thread, as pytest fixtures do.
    """
    as_user = ["--reuid", user, "--regid", user, "--init-groups"] if user else []
    return ["setpriv", "--pdeathsig", "KILL", *as_user, "--", *command]


def _as_postgres(*command: str) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as the postgres user."""
    return _dies_with_us(*command, user=POSTGRES_USER if os.geteuid() == 0 else None)


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports nobody listens on right now, chosen by the kernel from its high range.

    All probes stay bound until every port is chosen, so no two of the answers can be the same.
    """
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def free_port() -> int:
    return free_ports(1)[0]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_until(ready: Callable[[], bool], timeout: float, failure: Callable[[], str]) -> None:
    """Poll `ready` until it holds; past `timeout`, raise with the text `failure` builds (a log tail)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(failure())
        time.sleep(0.05)


def wait_for_port(port: int, timeout: float) -> None:
    """Return once something accepts TCP connections on 127.0.0.1:`port`."""
    _wait_until(lambda: _port_open(port), timeout, lambda: f"nothing listens on port {port} after {timeout} s")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


class _Server:
    """One server process living in its own temporary directory, logging to a file there.

    Entering prepares and starts it; leaving always ends it and deletes the directory, also when the
    start failed half-way. `stop()` then `start()` keeps the ports and the data.
    """

    _stop_signal = signal.SIGTERM

    def __init__(self, name: str, timeout: float) -> None:
        self._name = name
        self._timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None
        self.directory = Path()

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self._name}.log"

    def __enter__(self) -> Self:
        self.directory = Path(tempfile.mkdtemp(prefix=f"deid-{self._name}-"))
        try:
            self._prepare()
            self.start()
        except BaseException:
            self._shutdown()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        try:
            self._discard()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _discard(self) -> None:
        """End the server whose directory is about to be deleted."""
        self.stop()

    def _prepare(self) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _answers(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        """Run the server and return once it answers."""
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(), cwd=self.directory, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=_no_nagle_env(),
            )  # fmt: skip
        _wait_until(self._ready, self._timeout, lambda: f"{self._name} did not start:\n{_tail(self.log_path)}")

    def _ready(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError(f"{self._name} exited during start-up:\n{_tail(self.log_path)}")
        return self._answers()

    def stop(self) -> None:
        """Shut down cleanly by PID and wait for the exit, so that a restart finds its ports free."""
        if self._process is None:
            return
        self._process.send_signal(self._stop_signal)
        try:
            self._process.wait(timeout=self._timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._process = None

    def kill(self) -> None:
        """Crash the server at once (SIGKILL), as a power cut would."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait()
        self._process = None


class Orthanc(_Server):
    """Orthanc 1.10 as the research PACS: accepts any caller, any storage SOP class, any transfer syntax.

    `stop()` (a clean shutdown, about 3 s) then `start()` keeps the ports and the stored instances,
    which is how a test simulates a destination that is down for a while; `kill()` is a crash.

    With `dicomweb`, its DICOMweb plugin serves STOW-RS at `stow_url`; with `users` (name: password)
    its HTTP side, DICOMweb included, asks for basic authentication (the REST calls here use the
    first user).
    """

    def __init__(self, aet: str = "RESEARCH_PACS", *, check_called_aet: bool = True, dicomweb: bool = False,
                 users: dict[str, str] | None = None, timeout: float = 30.0) -> None:
        super().__init__("orthanc", timeout)
        self.aet = aet
        self.check_called_aet = check_called_aet
        self.dicomweb = dicomweb
        self.users = dict(users or {})
        self.dicom_port = 0
        self.http_port = 0

    def _prepare(self) -> None:
        self.dicom_port, self.http_port = free_ports(2)
        storage = self.directory / "storage"
        config = {
            "Name": "deid-node-test-pacs",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [str(DICOMWEB_PLUGIN)] if self.dicomweb else [],
            "DicomWeb": {"Enable": self.dicomweb, "Root": "/dicom-web/"},
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": self.check_called_aet,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckModalityHost": False,
            "DicomModalities": {},
            "UnknownSopClassAccepted": True,
            "AcceptedTransferSyntaxes": ["1.2.840.10008.1.*"],
            "DeflatedTransferSyntaxAccepted": True,
            "JpegTransferSyntaxAccepted": True,
            "Jpeg2000TransferSyntaxAccepted": True,
            "JpegLosslessTransferSyntaxAccepted": True,
            "JpipTransferSyntaxAccepted": True,
            "Mpeg2TransferSyntaxAccepted": True,
            "Mpeg4TransferSyntaxAccepted": True,
            "H265TransferSyntaxAccepted": True,
            "RleTransferSyntaxAccepted": True,
            "SaveJobs": False,
            "MetricsEnabled": False,
        }
        (self.directory / "orthanc.json").write_text(json.dumps(config, indent=2))

    def _command(self) -> list[str]:
        return _dies_with_us(str(ORTHANC_BINARY), str(self.directory / "orthanc.json"))

    def _answers(self) -> bool:
        try:
            self._get("/system")
        except OSError:
            return False
        return _port_open(self.dicom_port)

    def _discard(self) -> None:
        self.kill()  # the storage is deleted next: no need to wait for a clean shutdown

    @property
    def stow_url(self) -> str:
        """The DICOMweb STOW-RS endpoint (with `dicomweb`)."""
        return f"http://127.0.0.1:{self.http_port}/dicom-web/studies"

    def _get(self, path: str) -> bytes:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}")
        if self.users:
            user, password = next(iter(self.users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=self._timeout) as answer:
            return bytes(answer.read())

    def _get_json(self, path: str) -> Any:
        return json.loads(self._get(path))

    def instances(self) -> list[str]:
        """Orthanc's identifiers of every stored instance."""
        return list(self._get_json("/instances"))

    def simplified_tags(self, instance_id: str) -> dict[str, Any]:
        return dict(self._get_json(f"/instances/{instance_id}/simplified-tags"))

    def file(self, instance_id: str) -> bytes:
        """The DICOM file exactly as Orthanc stored it."""
        return self._get(f"/instances/{instance_id}/file")

    def dataset(self, instance_id: str) -> pydicom.Dataset:
        return pydicom.dcmread(BytesIO(self.file(instance_id)))

    def count(self) -> int:
        return int(self._get_json("/statistics")["CountInstances"])

    def wait_for_count(self, n: int, timeout: float) -> int:
        """Wait until at least `n` instances are stored; the count reached, which is below `n` on timeout."""
        deadline = time.monotonic() + timeout
        while (reached := self.count()) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        return reached


class PostgresServer(_Server):
    """A throw-away PostgreSQL 15 cluster, tuned for tests (no fsync), trusting local connections.

    The postmaster runs as a direct child (not daemonised by pg_ctl), so it dies with the test run.
    """

    _stop_signal = signal.SIGINT  # "fast" shutdown: sessions are cut, the data stays consistent

    def __init__(self, *, timeout: float = 30.0) -> None:
        super().__init__("postgres", timeout)
        self.port = 0

    @property
    def _data(self) -> Path:
        return self.directory / "data"

    def _prepare(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, user=POSTGRES_USER, group=POSTGRES_USER)
        initdb = subprocess.run(
            _as_postgres(str(POSTGRES_BIN / "initdb"), "-D", str(self._data), "-A", "trust", "-U", POSTGRES_USER,
                         "-E", "UTF8", "--no-locale", "--no-sync"),
            cwd=self.directory, capture_output=True, text=True, timeout=self._timeout,
        )  # fmt: skip
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stderr}")
        self.port = free_port()

    def _command(self) -> list[str]:
        return _as_postgres(
            str(POSTGRES_BIN / "postgres"), "-D", str(self._data), "-p", str(self.port), "-k", str(self.directory),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
        )  # fmt: skip

    def _answers(self) -> bool:
        probe = [str(POSTGRES_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(probe, check=False, timeout=self._timeout).returncode == 0

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://{POSTGRES_USER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        subprocess.run(
            [str(POSTGRES_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", POSTGRES_USER, name],
            check=True, capture_output=True, timeout=self._timeout,
        )  # fmt: skip
        return self.url(name)


def _association_profile(files: Sequence[Path]) -> str:
    """A storescu profile that proposes, per SOP class, exactly the transfer syntaxes of the files.

    storescu's -x.. flags add every uncompressed syntax too, and storescu silently transcodes when
    the peer accepts only those; proposing each file's own syntax alone means an instance arrives
    byte-for-byte as stored, or the send fails and the test sees it.
    """
    pairs: dict[tuple[UID, UID], None] = {}
    for path in files:
        meta = read_file_meta_info(path)
        pairs[(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)] = None
    if len(pairs) > 128:
        raise ValueError(f"{len(pairs)} (SOP class, transfer syntax) pairs: one association carries at most 128")
    syntaxes = list(dict.fromkeys(syntax for _, syntax in pairs))
    lines = ["[[TransferSyntaxes]]"]
    for number, syntax in enumerate(syntaxes, start=1):
        lines += [f"[TS{number}]", f"TransferSyntax1 = {syntax}"]
    lines += ["[[PresentationContexts]]", "[Files]"]
    for number, (sop_class, syntax) in enumerate(pairs, start=1):
        lines.append(f"PresentationContext{number} = {sop_class}\\TS{syntaxes.index(syntax) + 1}")
    lines += ["[[Profiles]]", "[Files]", "PresentationContexts = Files"]
    return "\n".join(lines) + "\n"


def storescu(
    files: Iterable[Path | str],
    port: int,
    *,
    called_ae: str,
    calling_ae: str = "MODALITY",
    host: str = "127.0.0.1",
    extra: Sequence[str] = (),
    check: bool = True,
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Send `files` over one association with dcmtk's storescu, as a modality would.

    Each file travels in its own transfer syntax (see `_association_profile`). With `check`, a
    refused association or a failed store raises CalledProcessError.
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise ValueError("storescu needs at least one file")
    with tempfile.TemporaryDirectory(prefix="deid-storescu-") as scratch:
        profile = Path(scratch) / "storescu.cfg"
        profile.write_text(_association_profile(paths))
        command = [
            "storescu", "-xf", str(profile), "Files", "-aet", calling_ae, "-aec", called_ae,
            *extra, host, str(port), *map(str, paths),
        ]  # fmt: skip
        return subprocess.run(
            command, capture_output=True, text=True, check=check, timeout=timeout, env=_no_nagle_env()
        )


def echoscu(
    port: int, *, called_ae: str, calling_ae: str = "MODALITY", host: str = "127.0.0.1", timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """A C-ECHO with dcmtk's echoscu; never raises, so a test can assert on a refusal."""
    command = ["echoscu", "-aet", calling_ae, "-aec", called_ae, host, str(port)]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout, env=_no_nagle_env())


@contextmanager
def storage_peer(sop_classes: Sequence[str], store: Callable[[Event], object] | None = None,
                 **settings: object) -> Iterator[int]:
    """A pynetdicom C-STORE SCP on a free port accepting only `sop_classes` (an instance of any
    other class is refused for cause); yields its port."""
    ae = AE(ae_title="SINK")
    for sop_class in sop_classes:
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    for name, value in settings.items():
        setattr(ae, name, value)
    port = free_port()
    handlers = [(evt.EVT_C_STORE, store or (lambda event: 0x0000))]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        yield port
    finally:
        server.shutdown()
