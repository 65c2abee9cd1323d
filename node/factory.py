"""The one place that wires settings into engine, stores, de-identifiers, SCP handler and senders."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from node.config import DimseDestination, FolderDestination, Route, Settings
from node.deid.pseudonyms import DEFAULT_PROJECT, KeyedDerivation
from node.forward.sender import Sender
from node.persist.db import make_engine, make_session_factory, upgrade
from node.persist.mappings import MappingStore, OriginalCipher
from node.queue.deliveries import DeliveryStore
from node.queue.store import JobStore
from node.queue.sealing import Sealer
from node.queue.spool import Spool

if TYPE_CHECKING:
    from node.deid.pipeline import Deidentifier


@dataclass
class Node:
    settings: Settings
    _deidentifiers: dict[str, Deidentifier] = field(default_factory=dict, repr=False)
    _mappings: dict[str, MappingStore] = field(default_factory=dict, repr=False)

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
    def deliveries(self) -> DeliveryStore:
        return DeliveryStore(self.sessions, self.settings.node_name)

    @property
    def mappings(self) -> MappingStore:
        """The mappings of project `default` (those of a node without routes)."""
        return self.project_mappings(DEFAULT_PROJECT)

    def project_mappings(self, project: str) -> MappingStore:
        """One project's mappings, under the project's keys; one store per project per process."""
        store = self._mappings.get(project)
        if store is None:
            store = self._mappings[project] = MappingStore(self.sessions, self.derivation.for_project(project),
                                                           self.cipher, project)
        return store

    def upgrade_database(self) -> None:
        upgrade(self.settings.database_url)

    def store_handler(self):  # type: ignore[no-untyped-def]
        from node.receive.handlers import StoreHandler

        return StoreHandler(self.spool, self.jobs, self.derivation, self.settings.receive.max_instance_bytes)

    def deidentifier(self, route: Route | None = None) -> Deidentifier:
        """The route's profile and pixel policy (the first route's by default), loaded once per
        route per process; fails fast on a malformed rule file."""
        from node.deid.metadata import MetadataDeidentifier
        from node.deid.pipeline import Deidentifier
        from node.deid.pixels import PixelCleaner
        from node.deid.profile import load_profile

        route = route or self.settings.routes[0]
        built = self._deidentifiers.get(route.name)
        if built is None:
            metadata = MetadataDeidentifier(load_profile(route.profile),
                                            method_description=self.settings.deid.method_description)
            pixels = (PixelCleaner.from_policy_file(route.pixel_policy, timeout_seconds=self.settings.pixels.timeout_seconds)
                      if route.pixel_policy is not None else None)
            built = self._deidentifiers[route.name] = Deidentifier(metadata, pixels)
        return built

    def check_routes(self) -> None:
        """Load every route's rules and build every destination's sender once: a malformed
        profile or an unusable destination stops the node at start, not in every child."""
        for route in self.settings.routes:
            self.deidentifier(route)
        for name in self.settings.routed_destinations:
            self.sender(name).close()

    def deid_worker(self):  # type: ignore[no-untyped-def]
        from node.queue.worker import DeidWorker

        w = self.settings.workers
        return DeidWorker(self.jobs, self.spool, self.settings, self.deidentifier, self.project_mappings,
                          lease_seconds=w.lease_seconds, poll_seconds=w.poll_seconds, max_attempts=w.max_attempts)

    def sender(self, name: str) -> Sender:
        """The Sender of one destination, by its kind."""
        destination = self.settings.destinations[name]
        f = self.settings.forward
        if isinstance(destination, FolderDestination):
            from node.forward.folder import FolderSender

            return FolderSender(name, destination.path)
        if isinstance(destination, DimseDestination):
            from node.forward.dimse import DimseSender

            return DimseSender(name, destination, calling_ae_title=f.calling_ae_title, timeout=f.timeout_seconds)
        from node.forward.stow import StowSender

        return StowSender(name, destination)

    def forwarder(self, destination: str):  # type: ignore[no-untyped-def]
        """The forwarder loop of one destination (one per destination, each with its own connection)."""
        from node.forward.outbox import Forwarder

        return Forwarder(self.deliveries, self.spool, destination, self.sender(destination), self.settings.forward,
                         lease_seconds=self.settings.workers.lease_seconds,
                         poll_seconds=self.settings.workers.poll_seconds)

