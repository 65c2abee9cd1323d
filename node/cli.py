"""The one entry point: `deid-node COMMAND`. Every command has --help, exits non-zero with a
clear message on error, and prints no PHI except `lookup` and `export-mappings`, whose purpose
is authorised re-identification.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO, TypeVar

import click
from alembic.util.exc import CommandError as AlembicError
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from node import admin
from node.config import ConfigError, load_settings
from node.factory import Node
from node.logging import configure_logging
from node.metrics import DEFAULT_ROUTE
from node.persist.db import check as check_schema
from node.persist.exports import KINDS, export
from node.persist.imports import ImportRejected, ImportResult, import_patient_map, read_patient_map
from node.persist.mappings import MappingError, MappingStore
from node.persist.models import JobState

T = TypeVar("T")


class NodeContext:
    def __init__(self, config: Path | None) -> None:
        self.config = config

    def node(self) -> Node:
        try:
            settings = load_settings(self.config)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        configure_logging(settings.logging.level, settings.logging.format, process="cli")
        return Node(settings)

    def mappings(self, project: str) -> MappingStore:
        """A project's mapping store, once the secret is known to be the one that wrote the database."""
        store = self.node().project_mappings(project)
        _guard(store.verify_secret)
        return store


pass_ctx = click.make_pass_decorator(NodeContext)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", type=click.Path(path_type=Path), envvar="DEID_CONFIG",
              help="Settings file (default: config/node.yaml; env DEID_CONFIG).")
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """deid-node: receive DICOM, de-identify it, forward it clean."""
    ctx.obj = NodeContext(config)


@cli.command()
@click.option("--workers", type=int, default=None, help="De-identification worker processes (default: config).")
@click.option("--no-workers", is_flag=True, help="Run only the SCP; workers run elsewhere (`deid-node worker`).")
@pass_ctx
def serve(obj: NodeContext, workers: int | None, no_workers: bool) -> None:
    """Run the node: the SCP, the de-identification workers and the forwarder."""
    from node.supervisor import run

    node = _started(obj)
    count = 0 if no_workers else (workers if workers is not None else node.settings.workers.count)
    _guard(lambda: run(node, with_scp=True, deid_workers=count))


@cli.command()
@click.option("--workers", type=int, default=None, help="De-identification worker processes (default: config).")
@pass_ctx
def worker(obj: NodeContext, workers: int | None) -> None:
    """Run only de-identification workers and the forwarder (no SCP)."""
    from node.supervisor import run

    node = _started(obj)
    _guard(lambda: run(node, with_scp=False, deid_workers=workers or node.settings.workers.count))


def _started(obj: NodeContext) -> Node:
    """A node whose database is at head and whose secret matches it: a node with another secret
    would give known patients new pseudonyms, so it must not start."""
    node = obj.node()
    _guard(node.upgrade_database)
    _guard(node.mappings.verify_secret)
    return node


@cli.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--route", "route_name", required=True, help="The route every file takes (profile, project, destinations).")
@pass_ctx
def ingest(obj: NodeContext, directory: Path, route_name: str) -> None:
    """Queue every DICOM file under DIRECTORY as if it had been received, on route ROUTE.

    The running node (`serve` or `worker`) de-identifies and delivers them. Files that are not
    DICOM, cannot be read or are too large are listed and skipped; instances already queued on
    the route are counted as duplicates.
    """
    from node.receive.folder import Ingested, ingest_file

    node = _started(obj)
    route = _guard(lambda: node.settings.route(route_name))
    handler = node.store_handler()
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    counts = {outcome: 0 for outcome in Ingested}
    skipped: list[tuple[Path, Ingested]] = []
    with click.progressbar(files, label=f"ingesting on route {route.name}", file=sys.stderr) as bar:
        for path in bar:
            outcome = _guard(lambda: ingest_file(handler, path, route.name)).outcome
            counts[outcome] += 1
            if outcome not in (Ingested.QUEUED, Ingested.DUPLICATE):
                skipped.append((path, outcome))
    for path, outcome in skipped:
        click.echo(f"skipped ({outcome.value}): {path}")
    click.echo(", ".join(f"{outcome.value} {count}" for outcome, count in counts.items()))


@cli.command()
@pass_ctx
def status(obj: NodeContext) -> None:
    """Jobs per state, the oldest waiting job, and per destination: deliveries open, since when it
    has been unreachable, deliveries quarantined."""
    node = obj.node()
    report = _guard(node.jobs.status)
    for state, count in report.by_state.items():
        click.echo(f"{state:<12} {count}")
    click.echo(f"oldest waiting: {report.oldest_waiting.isoformat() if report.oldest_waiting else '-'}")
    for destination, known in report.destinations.items():
        if known.waiting_since is not None:
            click.echo(f"waiting for {destination} since {known.waiting_since:%Y-%m-%dT%H:%M:%SZ}: "
                       f"{known.pending} to deliver")
        elif known.pending:
            click.echo(f"delivering to {destination}: {known.pending} to deliver")
        if known.quarantined:
            click.echo(f"quarantined for {destination}: {known.quarantined}")


@cli.command()
@click.argument("job_ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Every waiting delivery and quarantined job.")
@click.option("--destination", help="Only deliveries to (and jobs quarantined by) this destination.")
@pass_ctx
def retry(obj: NodeContext, job_ids: tuple[int, ...], everything: bool, destination: str | None) -> None:
    """Try waiting deliveries now, and re-process quarantined jobs (only destinations that lack
    them get them again)."""
    if not job_ids and not everything:
        raise click.UsageError("name job ids, or --all")
    node = obj.node()
    due = _guard(lambda: admin.retry_waiting(node, destination)) if everything else 0
    released = _guard(lambda: admin.release(node, job_ids or None, destination))
    click.echo(f"{due} waiting deliveries due now, released {released} quarantined")


@cli.group()
def quarantine() -> None:
    """Instances set aside with a reason; never forwarded until released."""


@quarantine.command("list")
@click.option("--destination", help="Only jobs a delivery to this destination quarantined.")
@pass_ctx
def quarantine_list(obj: NodeContext, destination: str | None) -> None:
    """One line per quarantined job: id, received, the destinations that quarantined it (- when
    de-identification did), reason."""
    node = obj.node()
    jobs = _guard(lambda: node.jobs.jobs_in([JobState.QUARANTINED]))
    refused_by = _guard(lambda: node.jobs.quarantined_destinations([job.id for job in jobs]))
    for job in jobs:
        names = refused_by[job.id]
        if destination is None or destination in names:
            click.echo(f"{job.id}\t{job.received_at:%Y-%m-%dT%H:%M:%S}\t{','.join(names) or '-'}\t{job.last_error}")


@quarantine.command("show")
@click.argument("job_id", type=int)
@pass_ctx
def quarantine_show(obj: NodeContext, job_id: int) -> None:
    """Everything the node knows about one job (no PHI)."""
    job = _guard(lambda: obj.node().jobs.get(job_id))
    if job is None:
        raise click.ClickException(f"no job {job_id}")
    for field in ("id", "state", "calling_ae", "called_ae", "route", "project", "sop_class_uid", "sop_instance_hash",
                  "size_bytes", "attempts", "patient_pseudonym", "last_error", "received_at", "updated_at"):
        value = getattr(job, field)
        click.echo(f"{field}: {value.value if isinstance(value, JobState) else value}")


@quarantine.command("release")
@click.argument("job_ids", nargs=-1, type=int, required=True)
@pass_ctx
def quarantine_release(obj: NodeContext, job_ids: tuple[int, ...]) -> None:
    """Put quarantined jobs back through de-identification."""
    node = obj.node()
    click.echo(f"released {_guard(lambda: admin.release(node, job_ids))}")


@quarantine.command("purge")
@click.argument("job_ids", nargs=-1, type=int, required=True)
@click.option("--yes", is_flag=True, help="Confirm: the quarantined originals are deleted for good.")
@pass_ctx
def quarantine_purge(obj: NodeContext, job_ids: tuple[int, ...], yes: bool) -> None:
    """Delete quarantined instances for good."""
    if not yes:
        raise click.UsageError("purge deletes instances for good; add --yes")
    node = obj.node()
    click.echo(f"purged {_guard(lambda: admin.purge(node, job_ids))}")


@cli.command("export-mappings")
@click.option("--kind", type=click.Choice(KINDS), default="patients", show_default=True,
              help="patients and uids: `id_old,id_new`; offsets: `id_old,id_new,offset_days`.")
@click.option("--patient", metavar="PSEUDONYM", help="Only this patient (and, for uids, the patient's UIDs).")
@click.option("--study", metavar="UID", help="Only this study (original or new StudyInstanceUID).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True, path_type=str), default="-",
              help="File to write, created owner-only (default: stdout).")
@click.option("--project", default="default", show_default=True, help="Whose mappings (each project has its own).")
@pass_ctx
def export_mappings(obj: NodeContext, kind: str, patient: str | None, study: str | None, output: str,
                    project: str) -> None:
    """Write a mapping as CSV, for the archive of the research project or for a scorer.

    The output re-identifies patients: keep it where the database is kept.
    """
    store = obj.mappings(project)
    scope = _guard(lambda: store.scope(patient=patient, study=study))
    with _private_output(output) as out:
        count = _guard(lambda: export(store, kind, scope, out))
    _guard(lambda: store.note_access("mappings_exported", f"kind={kind} rows={count}"))


@contextmanager
def _private_output(output: str) -> Iterator[TextIO]:
    """stdout for "-", else a file only its owner can read: it holds originals."""
    if output == "-":
        yield sys.stdout
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when the file existed with a wider mode
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from exc
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
        yield out


@cli.command("import-patient-map")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=str))
@click.option("--project", default="default", show_default=True, help="Whose mappings (each project has its own).")
@pass_ctx
def import_map(obj: NodeContext, file: str, project: str) -> None:
    """Import a patient map: CSV `id_old,id_new` with an optional `offset_days` column.

    Every row is checked first (shape, duplicates in the file, conflicts with the stored map);
    one bad row and nothing is imported. Missing offsets are derived as for any patient.
    """
    store = obj.mappings(project)
    result = _guard(lambda: _import(store, file))
    click.echo(f"imported {result.imported} patients ({result.already_present} already present)")


def _import(store: MappingStore, file: str) -> ImportResult:
    """Print every problem of a rejected file, each with its line, before failing."""
    try:
        with click.open_file(file, "r", encoding="utf-8-sig", errors="strict") as stream:
            return import_patient_map(store, read_patient_map(stream))
    except ImportRejected as rejected:
        for problem in rejected.problems:
            click.echo(str(problem), err=True)
        raise


@cli.command()
@click.argument("value")
@click.option("--project", default="default", show_default=True, help="Whose mappings (each project has its own).")
@pass_ctx
def lookup(obj: NodeContext, value: str, project: str) -> None:
    """Authorised re-identification: VALUE as an original or as a pseudonym / new UID.

    Prints CSV `kind,id_old,id_new,offset_days` for every patient and UID mapping that matches.
    """
    store = obj.mappings(project)
    found = _guard(lambda: store.lookup(value))
    _guard(lambda: store.note_access("mapping_lookup", f"matches={len(found)}"))
    if not found:
        raise click.ClickException("no patient or UID mapping has that value")
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["kind", "id_old", "id_new", "offset_days"])
    writer.writerows((f.kind, f.original, f.new, "" if f.offset_days is None else f.offset_days) for f in found)


@cli.command()
@pass_ctx
def web(obj: NodeContext) -> None:
    """Serve the administrator's page and /metrics (settings: `web:`; also a child of `serve`
    when web.enabled). Every request needs the token in web.admin_token_file."""
    from node.web.server import serve_web

    node = _started(obj)
    _guard(lambda: serve_web(node))


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--route", default=DEFAULT_ROUTE, show_default=True, help="The route whose profile and pixel policy apply.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the reports: one folder per file, report.html, report.json and frame PNGs.")
@click.option("--frames", "frame_limit", type=int, default=64, show_default=True,
              help="Most frames rendered per instance (spread over a cine loop).")
@pass_ctx
def preview(obj: NodeContext, files: tuple[Path, ...], route: str, output: Path, frame_limit: int) -> None:
    """Dry run: de-identify FILES as the node would, recording nothing and forwarding nothing.

    Reports list every attribute changed, removed, added or kept (new values only) and show each
    frame as it would leave, masked boxes outlined. Folders are numbered in argument order, so
    no file name (which may hold PHI) is repeated.
    """
    from node.deid.pipeline import DeidentificationError, read_instance
    from node.config import ConfigError
    from node.preview import DryRun, dry_run
    from node.web.render import write_report

    node = obj.node()
    try:
        chosen = node.settings.route(route)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).rsplit(": ", 1)[-1], param_hint="--route") from exc
    deidentifier = _guard(lambda: node.deidentifier(chosen))
    derivation = node.derivation.for_project(chosen.project)
    for number, path in enumerate(files, start=1):
        try:
            run = dry_run(deidentifier, derivation, read_instance(path), frame_limit=frame_limit)
        except DeidentificationError as exc:
            run = DryRun(error=str(exc))
        report = _guard(lambda: write_report(run, output / f"instance-{number:04d}"))
        outcome = f"would quarantine: {run.error}" if run.error else f"{len(run.masked)} box(es) masked"
        click.echo(f"{report}: {outcome}")


db = click.Group("db", help="The mapping and job database.")
cli.add_command(db)


@db.command("upgrade")
@pass_ctx
def db_upgrade(obj: NodeContext) -> None:
    """Apply the Alembic migrations (also done by `serve` at start)."""
    node = obj.node()
    _guard(node.upgrade_database)
    click.echo("database at head")


@db.command("check")
@pass_ctx
def db_check(obj: NodeContext) -> None:
    """Exit non-zero unless the database is at head and the models match the migrations."""
    node = obj.node()
    _guard(lambda: check_schema(node.settings.database_url))
    click.echo("database at head; models match the migrations")


def _guard(action: Callable[[], T]) -> T:
    """Turn operational errors into one clear line and exit code 1."""
    try:
        return action()
    except MappingError as exc:
        raise click.ClickException(str(exc)) from exc
    except OperationalError as exc:
        raise click.ClickException(f"cannot use the database: {_first_line(exc)}") from exc
    except AlembicError as exc:
        raise click.ClickException(f"database schema: {_first_line(exc)}") from exc
    except (SQLAlchemyError, ConfigError, OSError) as exc:
        raise click.ClickException(f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    """Only the first line: SQLAlchemy puts the statement's parameters on the following ones."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main() -> None:
    cli(prog_name="deid-node")


if __name__ == "__main__":
    sys.exit(main())
