"""Structured logging for every process of the node, libraries included.

Events carry job ids, pseudonyms and keyed hashes, never names, IDs, dates, UIDs or datasets.
pynetdicom logs request identifiers and dataset summaries at DEBUG/INFO, so its loggers are
held at WARNING; everything else from the standard library goes through structlog's formatter
so that one process writes one format.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import warnings

import pydicom.config  # noqa: F401 - sets its logger's level on import; ours must come after
import structlog
from pydicom._uid_dict import UID_dictionary

# Libraries that would otherwise print dataset contents or request identifiers: pydicom's
# warnings quote element values ("Invalid value for VR UI: '1.2.3...'").
_QUIET_LOGGERS = {"pynetdicom": logging.WARNING, "pydicom": logging.CRITICAL, "presidio-analyzer": logging.ERROR,
                  "alembic": logging.WARNING}


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_AFTER_VALUE = re.compile(r"(\bvalues?\b)\s*(?:[:=]\s*)?(?!<)(.+)$", re.IGNORECASE | re.DOTALL)
_UID_LIKE = re.compile(r"\b\d+(?:\.\d+){2,}[^\s'\"]*")
REDACTED = "<redacted>"


class LibraryValueFilter(logging.Filter):
    """Strips dataset values out of library log lines (pynetdicom's "Non-conformant 'Affected SOP
    Instance UID' value '1.2.RAW-TEXT'" quotes whatever the sender put there, and a UID can carry
    any text): everything after the word "value", every quoted string that is not a DICOM element
    name or keyword, and every UID that is not one of the standard's. A library's traceback may
    quote values too: it is reduced to the exception's type. Our own (structlog) events pass as
    they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):  # a structlog event dict: ours
            return True
        try:
            message = scrub(record.getMessage())
        except Exception:  # noqa: BLE001 - a library's malformed log call must not raise at its call site
            message = f"{REDACTED} (unformattable message)"
        if record.exc_info and record.exc_info[0] is not None:
            message += f" ({record.exc_info[0].__name__})"
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = message, None
        return True


def scrub(message: str) -> str:
    """`message` without the values a library quoted into it (see LibraryValueFilter)."""
    message = _AFTER_VALUE.sub(lambda m: f"{m.group(1)} {REDACTED}", message)
    message = _QUOTED.sub(lambda m: m.group(0) if _from_the_standard(m.group(0)[1:-1]) else f"'{REDACTED}'",
                          message)
    return _UID_LIKE.sub(lambda m: m.group(0) if _from_the_standard(m.group(0)) else REDACTED, message)


def _from_the_standard(text: str) -> bool:
    return text in UID_dictionary or text in _standard_names()


@functools.cache
def _standard_names() -> frozenset[str]:
    """DICOM element names and keywords (data and DIMSE command elements): words from the
    standard, which a library may quote around a value without being one."""
    from pydicom.datadict import DicomDictionary
    from pydicom._dicom_dict import RepeatersDictionary

    entries = [*DicomDictionary.values(), *RepeatersDictionary.values()]
    return frozenset(name for entry in entries for name in (entry[2], entry[4]) if name)


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
    handler.addFilter(LibraryValueFilter())
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
