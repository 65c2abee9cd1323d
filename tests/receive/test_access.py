"""Who may associate: configured AE titles (optionally bound to addresses), over DICOM TLS with
client certificates when configured, within the association limit."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE, AllStoragePresentationContexts, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import Verification

from node.config import Destination, TLSSettings, load_settings
from node.factory import Node
from node.forward.dimse import DimseSender
from node.forward.sender import CleanFile, Outcome
from node.network import client_tls_context, server_tls_context
from node.receive.scp import start_scp
from tests.servers import free_port
from tests.tls import TestCA


def _running_node(node_config, **receive):  # type: ignore[no-untyped-def]
    node = Node(load_settings(node_config(receive=receive)))
    node.upgrade_database()
    return node, start_scp(node.settings.receive, node.store_handler())


def _echo(port: int, calling: str = "MODALITY", *, tls_args=None, bind_address=None) -> bool:  # type: ignore[no-untyped-def]
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    kwargs = {"bind_address": bind_address} if bind_address else {}
    assoc = ae.associate("127.0.0.1", port, ae_title="DEID_NODE", tls_args=tls_args, **kwargs)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0x0000


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


def test_tls_caller_with_a_certificate_from_the_ca_is_accepted_others_are_not(node_config, ca: TestCA) -> None:  # type: ignore[no-untyped-def]
    server = ca.issue("deid-node", server=True)
    client = ca.issue("modality", server=False)
    rogue = TestCA(ca.directory / "rogue").issue("rogue", server=False)
    node, scp = _running_node(node_config, tls={"certificate": str(server.certificate),
                                                "private_key": str(server.private_key),
                                                "ca_certificates": str(ca.bundle)})
    port = node.settings.receive.port
    try:
        def client_context(issued=None):  # type: ignore[no-untyped-def]
            tls = TLSSettings(ca_certificates=ca.bundle, certificate=issued and issued.certificate,
                              private_key=issued and issued.private_key)
            return (client_tls_context(tls), "localhost")

        assert _echo(port, tls_args=client_context(client))  # a real handshake on loopback
        assert not _echo(port, tls_args=client_context(None))  # no client certificate
        assert not _echo(port, tls_args=client_context(rogue))  # certificate from another CA
        assert not _echo(port)  # plain TCP to a TLS port
    finally:
        scp.shutdown()


def test_forwarding_over_tls_verifies_the_destination(tmp_path: Path, ca: TestCA) -> None:
    server = ca.issue("research-pacs", server=True)
    client = ca.issue("deid-node", server=False)
    received: list[str] = []
    pacs = AE(ae_title="RESEARCH_PACS")
    for context in AllStoragePresentationContexts:
        pacs.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    port = free_port()
    pacs_tls = server_tls_context(TLSSettings(certificate=server.certificate, private_key=server.private_key,
                                              ca_certificates=ca.bundle))

    def store(event):  # type: ignore[no-untyped-def]
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    scp = pacs.start_server(("127.0.0.1", port), block=False, ssl_context=pacs_tls,
                            evt_handlers=[(evt.EVT_C_STORE, store)])
    try:
        path = Path(get_testdata_file("CT_small.dcm"))
        sop_class = str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID)
        trusted = TLSSettings(ca_certificates=ca.bundle, certificate=client.certificate,
                              private_key=client.private_key, server_hostname="localhost")
        scu = DimseSender("pacs", Destination(ae_title="RESEARCH_PACS", host="127.0.0.1", port=port, tls=trusted),
                          calling_ae_title="DEID_NODE", timeout=10)
        assert [r.outcome for r in scu.send([CleanFile(path, sop_class)])] == [Outcome.DELIVERED]
        untrusting = trusted.model_copy(update={"ca_certificates": TestCA(tmp_path / "other").bundle})
        scu = DimseSender("pacs", Destination(ae_title="RESEARCH_PACS", host="127.0.0.1", port=port, tls=untrusting),
                          calling_ae_title="DEID_NODE", timeout=10)
        # wrong CA: not sent, and an outage to wait out (the operator fixes the trust), not a refusal
        assert [r.outcome for r in scu.send([CleanFile(path, sop_class)])] == [Outcome.WAIT]
        assert len(received) == 1
    finally:
        scp.shutdown()


def test_ae_title_bound_to_an_address_is_refused_from_another(node_config) -> None:  # type: ignore[no-untyped-def]
    node, scp = _running_node(node_config, allowed_callers=[{"ae_title": "MODALITY", "hosts": ["127.0.0.2"]},
                                                            {"ae_title": "ECHOSCU"}])
    port = node.settings.receive.port
    try:
        assert _echo(port, "MODALITY", bind_address=("127.0.0.2", 0))
        assert not _echo(port, "MODALITY", bind_address=("127.0.0.1", 0))
        assert _echo(port, "ECHOSCU")  # not bound: any address
    finally:
        scp.shutdown()


def test_associations_beyond_the_limit_are_refused(node_config) -> None:  # type: ignore[no-untyped-def]
    node, scp = _running_node(node_config, max_associations=1)
    port = node.settings.receive.port
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    first = ae.associate("127.0.0.1", port, ae_title="DEID_NODE")
    try:
        assert first.is_established
        assert not _echo(port)  # the second one, while the first is open
    finally:
        first.release()
        scp.shutdown()
