"""Typed settings for the node, read from one YAML file plus a few environment overrides.

Everything is validated at start-up so that a typo in `config/node.yaml` stops the node with a
message naming the file and the field, instead of surfacing as a failed job hours later.
Relative paths in the file are resolved against the directory that holds the file.
"""

from __future__ import annotations

import base64
import os
import secrets as _secrets
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "node.yaml"
SHIPPED_STORAGE_CLASSES = DEFAULT_CONFIG.parent / "storage-sop-classes.yaml"

AETitle = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[\x20-\x5b\x5d-\x7e]+$")]
Port = Annotated[int, Field(ge=1, le=65535)]


class ConfigError(Exception):
    """The configuration cannot be used; the message says which file and which field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AllowedCaller(_Strict):
    ae_title: AETitle
    hosts: tuple[str, ...] = ()  # empty: any source address


class TLSSettings(_Strict):
    """DICOM TLS (PS3.15 Annex B). Inbound: our certificate, and the CA that signs the callers'
    certificates when they must present one. Outbound: the CA that signs the destination's
    certificate, and our client certificate if the destination checks it."""

    certificate: Path | None = None
    private_key: Path | None = None
    ca_certificates: Path | None = None
    require_client_certificate: bool = True
    server_hostname: str | None = None  # outbound: the name in the destination's certificate


class ReceiveSettings(_Strict):
    ae_title: AETitle = "DEID_NODE"
    bind: str = "127.0.0.1"
    port: Port = 11112
    allowed_callers: tuple[AllowedCaller, ...] = ()
    # Associations admitted at once, overall and per source address. Only requested associations
    # count: a connection that has not sent its A-ASSOCIATE-RQ holds no slot (see receive/guard.py).
    max_associations: int = Field(default=10, ge=1)
    max_associations_per_host: int = Field(default=8, ge=1)
    # Connections still waiting to associate; more are closed at once (each costs two threads).
    max_pending_connections: int = Field(default=64, ge=1)
    # Largest PDU a sender may send us (0: no limit). Each PDU is one trip through pynetdicom's
    # Python state machine, so 1 MiB instead of the usual 16 KiB cuts receive CPU by about a
    # quarter on 512x512 CT (measured with bench/sink.py and storescu).
    max_pdu: int = Field(default=1024 * 1024, ge=0)
    max_instance_bytes: int = Field(default=2 * 1024**3, ge=1024)
    min_free_bytes: int = Field(default=256 * 1024**2, ge=0)
    network_timeout: float = Field(default=60.0, gt=0)
    # Seconds a connection has to deliver its whole A-ASSOCIATE-RQ (a peer trickling it is closed),
    # and pynetdicom's ACSE timeout (waiting for a request or release); short, since a real caller
    # sends its request at once.
    associate_timeout: float = Field(default=5.0, gt=0)
    dimse_timeout: float = Field(default=60.0, gt=0)
    tls: TLSSettings | None = None
    # Storage SOP classes accepted besides pynetdicom's list: the standard's retired ones, and
    # any private ones a site adds (see the file).
    storage_classes: Path = SHIPPED_STORAGE_CLASSES


class DimseDestination(_Strict):
    """A DICOM peer reached by C-STORE (a PACS, Orthanc, a workstation)."""

    kind: Literal["dimse"] = "dimse"
    ae_title: AETitle
    host: str
    port: Port
    tls: TLSSettings | None = None


Destination = DimseDestination  # the single destination of a config without routes


class StowAuth(_Strict):
    """HTTP authentication for a DICOMweb server: basic (user + password file) or a bearer token
    file. Secrets live in files (mode 0600), never in node.yaml."""

    username: str | None = None
    password_file: Path | None = None
    bearer_token_file: Path | None = None


class StowDestination(_Strict):
    """A DICOMweb server reached by STOW-RS (PS3.18 10.5): POST multipart/related to `url`
    (the server's .../studies endpoint)."""

    kind: Literal["stow"]
    url: Annotated[str, Field(pattern=r"^https?://")]
    auth: StowAuth | None = None
    verify_tls: bool = True
    ca_certificates: Path | None = None  # PEM bundle trusted for https (default: the system's)
    batch_size: int = Field(default=16, ge=1, le=1000)  # instances per request
    timeout_seconds: float = Field(default=60.0, gt=0)


class FolderDestination(_Strict):
    """Clean Part-10 files written atomically under `path/<project>/<patient>/<study>/<series>/`."""

    kind: Literal["folder"]
    path: Path


def _destination_kind(value: object) -> str:
    """`kind` picks the model; a destination without one is a DICOM peer (as before kinds)."""
    kind = value.get("kind", "dimse") if isinstance(value, dict) else getattr(value, "kind", "dimse")
    return str(kind)


DestinationSettings = Annotated[
    Annotated[DimseDestination, Tag("dimse")] | Annotated[StowDestination, Tag("stow")]
    | Annotated[FolderDestination, Tag("folder")],
    Discriminator(_destination_kind),
]


class ForwardSettings(_Strict):
    calling_ae_title: AETitle = "DEID_NODE"
    destination: Destination
    max_attempts: int = Field(default=8, ge=1)
    backoff_initial_seconds: float = Field(default=2.0, ge=0)
    backoff_max_seconds: float = Field(default=600.0, ge=0)
    batch_size: int = Field(default=32, ge=1)
    timeout_seconds: float = Field(default=30.0, gt=0)
    # Batches share one association, released after this long without work: an open one keeps
    # pynetdicom's polling threads busy on both sides (about a tenth of a core each, measured with
    # bench/sink.py). Past timeout_seconds of silence pynetdicom aborts it anyway (network timeout).
    idle_release_seconds: float = Field(default=5.0, ge=0)


class WorkerSettings(_Strict):
    count: int = Field(default=2, ge=1, le=64)
    lease_seconds: float = Field(default=300.0, gt=0)
    poll_seconds: float = Field(default=0.2, gt=0)
    max_attempts: int = Field(default=3, ge=1)


class DeidSettings(_Strict):
    profile: Path
    uid_root: str = Field(default="2.25", pattern=r"^[0-9]+(\.[0-9]+)*$")
    pseudonym_pattern: str = "ANON-{digest}"
    date_offset_min_days: int = -3650
    date_offset_max_days: int = -365
    method_description: str = "deid-node"

    @field_validator("date_offset_max_days")
    @classmethod
    def _window(cls, value: int, info) -> int:  # type: ignore[no-untyped-def]
        low = info.data.get("date_offset_min_days")
        if low is not None and value < low:
            raise ValueError("date_offset_max_days must not be smaller than date_offset_min_days")
        return value


class PixelSettings(_Strict):
    policy: Path | None = None  # None: the pixel step is off
    timeout_seconds: float = Field(default=300.0, gt=0)


class WebSettings(_Strict):
    """The administrator's page (status, quarantine review, dry run) and /metrics. Every request
    needs the token held in `admin_token_file` (created, owner-only, on first start)."""

    enabled: bool = False
    bind: str = "127.0.0.1"
    port: Port = 8480
    admin_token_file: Path = Path("admin-token")
    refresh_seconds: int = Field(default=10, ge=1)
class QuarantineSettings(_Strict):
    """Quarantined originals are PHI kept only for an administrator to look into: after
    `retention_days` the node deletes them (and their job), with an audit row."""

    retention_days: float = Field(default=30.0, gt=0)
    purge_interval_seconds: float = Field(default=3600.0, gt=0)


class LogSettings(_Strict):
    level: str = "INFO"
    format: str = Field(default="json", pattern="^(json|console)$")


class Settings(_Strict):
    node_name: str = "deid-node"
    spool_dir: Path
    database_url: str
    secret_file: Path
    receive: ReceiveSettings = ReceiveSettings()
    workers: WorkerSettings = WorkerSettings()
    forward: ForwardSettings
    deid: DeidSettings
    pixels: PixelSettings = PixelSettings()
    web: WebSettings = WebSettings()
    quarantine: QuarantineSettings = QuarantineSettings()
    logging: LogSettings = LogSettings()
    source: Path = Path("<defaults>")

    def secret(self) -> bytes:
        """The node's master secret: DEID_SECRET, else the secret file, created on first use.

        Nodes that share one database must share this secret, or they derive different UIDs.
        """
        return load_or_create_secret(self.secret_file)


_ENV_OVERRIDES = {
    "DEID_DATABASE_URL": ("database_url",),
    "DEID_SPOOL_DIR": ("spool_dir",),
    "DEID_SECRET_FILE": ("secret_file",),
    "DEID_PORT": ("receive", "port"),
}


def load_settings(path: Path | str | None = None) -> Settings:
    """Read, resolve and validate the settings file (DEID_CONFIG, else config/node.yaml)."""
    config_path = Path(path or os.environ.get("DEID_CONFIG") or DEFAULT_CONFIG).resolve()
    raw = read_yaml_mapping(config_path)
    for variable, keys in _ENV_OVERRIDES.items():
        if variable in os.environ:
            target = raw
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = os.environ[variable]
    raw["source"] = str(config_path)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{config_path}: {problems}") from exc
    return _resolve_paths(settings, config_path.parent)


def read_yaml_mapping(path: Path) -> dict:
    """A settings or policy file's top-level mapping; ConfigError naming the file otherwise."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return raw


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    url = settings.database_url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = "sqlite:///" + str(resolve(Path(url.removeprefix("sqlite:///"))))
    pixels = settings.pixels
    if pixels.policy is not None:
        pixels = pixels.model_copy(update={"policy": resolve(pixels.policy)})

    def resolve_tls(tls: TLSSettings | None) -> TLSSettings | None:
        if tls is None:
            return None
        fields = ("certificate", "private_key", "ca_certificates")
        return tls.model_copy(update={f: resolve(getattr(tls, f)) for f in fields if getattr(tls, f) is not None})

    destination = settings.forward.destination
    return settings.model_copy(
        update={
            "receive": settings.receive.model_copy(update={"tls": resolve_tls(settings.receive.tls),
                                                           "storage_classes": resolve(settings.receive.storage_classes)}),
            "forward": settings.forward.model_copy(update={
                "destination": destination.model_copy(update={"tls": resolve_tls(destination.tls)})}),
            "spool_dir": resolve(settings.spool_dir),
            "secret_file": resolve(settings.secret_file),
            "database_url": url,
            "deid": settings.deid.model_copy(update={"profile": resolve(settings.deid.profile)}),
            "pixels": pixels,
            "web": settings.web.model_copy(update={"admin_token_file": resolve(settings.web.admin_token_file)}),
        }
    )


def load_or_create_secret(path: Path) -> bytes:
    """Return the secret from DEID_SECRET or `path`; create `path` (mode 0600) if missing."""
    env = os.environ.get("DEID_SECRET")
    if env:
        return env.encode()
    return load_or_create_private_token(path)


def load_or_create_private_token(path: Path) -> bytes:
    """Return the random token in `path`, creating it (mode 0600, fsynced) if missing; two
    processes starting together read the same one."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        value = base64.urlsafe_b64encode(_secrets.token_bytes(32))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process of this node created it first
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as fh:
            fh.write(value + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        return value
