"""Log lines are JSON and carry no dataset values, even when a library wants to print them."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
from node.logging import configure_logging
configure_logging()
import pydicom, structlog
from pydicom.dataset import Dataset
ds = Dataset()
ds.SOPInstanceUID = "1.2.3.FAKEUID.not-a-uid"      # pydicom warns, quoting the value
from pydicom.data import get_testdata_file
broken = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm"))
try:
    broken.pixel_array                              # pydicom logs every decoder's failure
except Exception:
    pass
from pynetdicom.dimse_primitives import C_STORE
C_STORE().AffectedSOPInstanceUID = "1.2.3.FAKEUID.DOE^JANE"   # pynetdicom warns: Non-conformant ... value '...'
import logging
try:
    raise ValueError("bad element 'FAKEUID DOE^JANE'")
except ValueError:
    logging.getLogger("pynetdicom.dul").exception("Reading %s failed", "1.2.840.99.FAKEUID")
logging.getLogger("pynetdicom.acse").warning("Transfer syntax '1.2.840.10008.1.2.1' for 'PatientName'")
structlog.get_logger("probe").info("done", job=1)
"""


def test_library_warnings_that_quote_values_stay_out_of_the_log() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "FAKEUID" not in result.stderr
    assert "Traceback" not in result.stderr
    events = [json.loads(line)["event"] for line in lines]
    assert events[-1] == "done"
    assert "DOE^JANE" not in result.stderr
    # the library's lines stay, without the values: what happened is still readable
    assert "Non-conformant 'Affected SOP Instance UID' value <redacted>" in events
    assert "Reading <redacted> failed (ValueError)" in events
    assert "Transfer syntax '1.2.840.10008.1.2.1' for 'PatientName'" in events
