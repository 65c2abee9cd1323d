"""The one place that wires settings into engine, stores, de-identifier, SCP handler and SCU."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from node.config import Settings
from node.deid.pseudonyms import KeyedDerivation
from node.persist.db import make_engine, make_session_factory, upgrade
from node.persist.mappings import MappingStore, OriginalCipher
from node.queue.store import JobStore
from node.receive.sealing import Sealer
from node.receive.spool import Spool


@dataclass
class Node:
    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def derivation(self) -> KeyedDerivation:
        deid = self.settings.deid
        return KeyedDerivation(self.settings.secret(), uid_root=deid.uid_root,
                               pseudonym_pattern=deid.pseudonym_pattern,
                               offset_min_days=deid.date_offset_min_days,
                               offset_max_days=deid.date_offset_max_days)

    @cached_property
    def cipher(self) -> OriginalCipher:
        return OriginalCipher(self.settings.secret())

    @cached_property
    def spool(self) -> Spool:
        return Spool(self.settings.spool_dir, Sealer(self.settings.secret()), self.settings.receive.min_free_bytes)

    @cached_property
    def jobs(self) -> JobStore:
        return JobStore(self.sessions, self.settings.node_name)

    @cached_property
    def mappings(self) -> MappingStore:
        return MappingStore(self.sessions, self.derivation, self.cipher)

    def upgrade_database(self) -> None:
        upgrade(self.settings.database_url)

    def store_handler(self):  # type: ignore[no-untyped-def]
        from node.receive.handlers import StoreHandler

        return StoreHandler(self.spool, self.jobs, self.derivation, self.settings.receive.max_instance_bytes)

    def deidentifier(self):  # type: ignore[no-untyped-def]
        """Loads the profile and pixel policy; fails fast on a malformed rule file."""
        from node.deid.metadata import MetadataDeidentifier
        from node.deid.pipeline import Deidentifier
        from node.deid.pixels import PixelCleaner
        from node.deid.profile import load_profile

        metadata = MetadataDeidentifier(load_profile(self.settings.deid.profile),
                                        method_description=self.settings.deid.method_description)
        policy = self.settings.pixels.policy
        pixels = (PixelCleaner.from_policy_file(policy, timeout_seconds=self.settings.pixels.timeout_seconds)
                  if policy is not None else None)
        return Deidentifier(metadata, pixels)

    def deid_worker(self):  # type: ignore[no-untyped-def]
        from node.queue.worker import DeidWorker

        w = self.settings.workers
        return DeidWorker(self.jobs, self.spool, self.deidentifier(), self.mappings, lease_seconds=w.lease_seconds,
                          poll_seconds=w.poll_seconds, max_attempts=w.max_attempts)

    def forwarder(self):  # type: ignore[no-untyped-def]
        from node.forward.outbox import Forwarder
        from node.forward.dimse import DimseSender

        f = self.settings.forward
        destination = f.destination
        scu = DimseSender(f"{destination.ae_title}@{destination.host}:{destination.port}", destination,
                          calling_ae_title=f.calling_ae_title, timeout=f.timeout_seconds)
        return Forwarder(self.jobs, self.spool, scu, f, lease_seconds=self.settings.workers.lease_seconds,
                         poll_seconds=self.settings.workers.poll_seconds)
