"""The Storage SCP: every storage SOP class pynetdicom knows and those config/storage-sop-classes.yaml
adds (the standard's retired ones, a site's private ones), every transfer syntax pynetdicom can
receive, and only the calling AE titles (and, optionally, source addresses) the config allows.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import structlog
from pydicom.uid import UID
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt, register_uid
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from node.config import ConfigError, ReceiveSettings, read_yaml_mapping
from node.network import no_delay_on_open, server_tls_context
from node.receive.guard import AssociationGuard, start_guarded_server
from node.receive.handlers import StoreHandler, handlers

log = structlog.get_logger(__name__)


def build_ae(settings: ReceiveSettings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    for uid in extra_storage_classes(settings.storage_classes):
        ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    # Calling and called AE titles and association limits are checked by receive/guard.py, which
    # logs each refusal; pynetdicom's own limit counts connections that never associated, so it is
    # set above anything the guard lets through.
    ae.maximum_associations = settings.max_associations + settings.max_pending_connections
    ae.maximum_pdu_size = settings.max_pdu
    ae.network_timeout = settings.network_timeout
    ae.acse_timeout = settings.associate_timeout
    ae.dimse_timeout = settings.dimse_timeout
    return ae


def extra_storage_classes(path: Path) -> list[str]:
    """The storage SOP classes `path` lists (retired and private), each registered with
    pynetdicom's storage service: a C-STORE in a class pynetdicom does not know would otherwise
    find no service to handle it, even in an accepted context."""
    known = {context.abstract_syntax for context in AllStoragePresentationContexts}
    uids = [uid for uid in _listed_classes(path) if uid not in known]
    for uid in uids:
        register_uid(uid, "Accepted_" + uid.replace(".", "_"), StorageServiceClass)
    return uids


def _listed_classes(path: Path) -> list[str]:
    raw = read_yaml_mapping(path)
    if set(raw) - {"retired", "private"}:
        raise ConfigError(f"{path}: expected the lists 'retired' and 'private' only")
    uids = []
    for group in ("retired", "private"):
        for entry in raw.get(group) or []:
            uid = str(entry.get("uid", "")) if isinstance(entry, dict) else ""
            if not UID(uid).is_valid:
                raise ConfigError(f"{path}: {group}: {entry!r} is not {{uid: <a valid UID>, name: ...}}")
            uids.append(uid)
    return uids


class _CheaplyCopiedContext(PresentationContext):
    """pynetdicom deep-copies the acceptor's contexts for every association it accepts: for every
    storage SOP class in every transfer syntax that cost ~110 ms of CPU per association (measured),
    more than receiving a CT slice. A context's parts are immutable strings and flags, except its
    list of transfer syntaxes, so a shallow copy with that list copied is just as independent."""

    def __deepcopy__(self, memo: dict[int, Any]) -> "_CheaplyCopiedContext":
        twin = copy.copy(self)
        twin._transfer_syntax = list(self._transfer_syntax)
        return twin


def accepted_contexts(ae: AE) -> list[PresentationContext]:
    """The AE's supported contexts, as contexts that are cheap to copy per association."""
    contexts = []
    for context in ae.supported_contexts:
        cheap = _CheaplyCopiedContext()
        cheap.__dict__.update(context.__dict__)
        cheap._transfer_syntax = list(context._transfer_syntax)
        contexts.append(cheap)
    return contexts


def start_scp(settings: ReceiveSettings, store: StoreHandler) -> ThreadedAssociationServer:
    """Start listening in the background; the caller owns shutdown()."""
    ae = build_ae(settings)
    guard = AssociationGuard(settings)
    event_handlers = [*handlers(store), (evt.EVT_CONN_OPEN, no_delay_on_open), *guard.handlers()]
    tls = server_tls_context(settings.tls) if settings.tls is not None else None
    server = start_guarded_server(ae, (settings.bind, settings.port), guard, evt_handlers=event_handlers,
                                  ssl_context=tls, contexts=accepted_contexts(ae))
    log.info("scp_listening", ae_title=settings.ae_title, bind=settings.bind, port=settings.port,
             tls=tls is not None)
    return server
