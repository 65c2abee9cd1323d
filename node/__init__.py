"""deid-node: receive DICOM, de-identify it, remember the mapping, forward it clean."""

__version__ = "0.1.0"
