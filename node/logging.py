"""Structured logging for every process of the node, libraries included.

Events carry job ids, pseudonyms and keyed hashes, never names, IDs, dates, UIDs or datasets.
pynetdicom logs request identifiers and dataset summaries at DEBUG/INFO, so its loggers are
held at WARNING; everything else from the standard library goes through structlog's formatter
so that one process writes one format.
"""

from __future__ import annotations

import logging
import sys
import warnings

import pydicom.config  # noqa: F401 - sets its logger's level on import; ours must come after
import structlog

# Libraries that would otherwise print dataset contents or request identifiers: pydicom's
# warnings quote element values ("Invalid value for VR UI: '1.2.3...'").
_QUIET_LOGGERS = {"pynetdicom": logging.WARNING, "pydicom": logging.CRITICAL, "presidio-analyzer": logging.ERROR,
                  "alembic": logging.WARNING}


def configure_logging(level: str = "INFO", fmt: str = "json", process: str = "node") -> None:
    """Route structlog and stdlib logging to stderr as JSON (or console) lines."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, quiet in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(quiet, root.level))
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    structlog.contextvars.bind_contextvars(process=process)
