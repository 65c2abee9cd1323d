"""Encoding the clean dataset as a DICOM file, fast where nothing but copying is needed.

pydicom's writer spends some 20 µs on every element, even one it copies through as read, and a
CT slice keeps ~200 such elements (most of them private): most of the write. Where pydicom would
copy the elements as read, `part10` copies them itself and leaves the file head and every other
element to pydicom; elsewhere it is pydicom's `save_as`.
"""

from __future__ import annotations

import copy
import io
from struct import Struct

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.tag import tag_in_exception
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

_IMPLICIT_HEADER = Struct("<HHL")
_EXPLICIT_HEADER = Struct("<HH2sH")
_EXPLICIT_LONG_HEADER = Struct("<HH2sHL")  # VRs with a 4-byte length: 2 reserved bytes first
_GROUP_LENGTH = 0x00020000
_LARGE = 1 << 16  # bytes: a value this long is written from its own bytes object, not copied
_SPECIFIC_CHARACTER_SET = 0x00080005


def part10(ds: Dataset) -> bytes:
    """`ds` as a DICOM file, byte for byte what `save_as(enforce_file_format=True)` writes."""
    return b"".join(part10_pieces(ds))


def part10_pieces(ds: Dataset) -> list[bytes]:
    """`ds` as a DICOM file in pieces to write one after the other, byte for byte what
    `save_as(enforce_file_format=True)` writes.

    pydicom's writer spends some 20 µs on every element, even one it copies through as read, and
    a CT slice keeps ~200 of those (most of them private): most of the write. Where pydicom would
    copy the elements as read (written in the encoding and character set they were read in),
    this copies them itself and leaves the file head and every other element to pydicom. Large
    native values (pixel data) are pieces of their own, the dataset's own bytes objects: a
    500 MB multi-frame instance is not copied once more into the file image.
    """
    syntax = _copyable_syntax(ds)
    if syntax is None:
        if not _declared_implicit(ds):
            _give_missing_vrs(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return [buffer.getvalue()]
    pieces: list[bytes] = []
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, syntax.is_implicit_VR
    out.write(_file_head(ds))
    if "PixelData" in ds:  # as dcmwrite does: encapsulated pixel data has an undefined length
        ds["PixelData"].is_undefined_length = syntax.is_compressed
    encodings = ds.get("SpecificCharacterSet", default_encoding)
    implicit = syntax.is_implicit_VR
    for tag in sorted(ds.keys()):
        if tag & 0xFFFF == 0 and tag > 0x0006FFFF:  # retired group lengths, which pydicom drops too
            continue
        element = ds.get_item(tag)
        raw = isinstance(element, RawDataElement)
        header = _raw_header(element, implicit) if raw else _large_native_header(element, implicit)
        if header is None:
            if raw and element.VR is None and not implicit:
                _give_missing_vrs(ds)
                element = ds[tag]
            with tag_in_exception(tag):
                write_data_element(out, element, encodings)
        elif len(element.value) >= _LARGE:
            pieces += [out.getvalue(), header, element.value]
            out = DicomBytesIO()
            out.is_little_endian, out.is_implicit_VR = True, implicit
        else:
            out.write(header)
            out.write(element.value)
    pieces.append(out.getvalue())
    return pieces


def declared_syntax(ds: Dataset) -> UID | None:
    """The transfer syntax the instance's file meta declares: the one it will be written in."""
    meta = getattr(ds, "file_meta", None)
    return meta.get("TransferSyntaxUID") if meta is not None else None


def _declared_implicit(ds: Dataset) -> bool:
    syntax = declared_syntax(ds)
    return syntax is not None and syntax.is_transfer_syntax and syntax.is_implicit_VR


def _give_missing_vrs(ds: Dataset) -> None:
    """Look up the VR of every element read without one, in `ds` and its sequences' items.

    A file that says explicit VR but holds implicit VR elements (one vendor's writer, or an edit
    that re-labelled the syntax) is read by pydicom, which goes on in implicit VR, but its writer
    cannot write an explicit VR it does not know. Converting an element looks its VR up in the
    dictionary (UN for unknown private ones), so the instance is written, whole, in the syntax
    its file declares."""
    for tag in ds.keys():
        element = ds.get_item(tag)
        if isinstance(element, RawDataElement):
            if element.VR is not None:
                continue
            element = ds[tag]
        if element.VR == "SQ":
            for item in element.value:
                _give_missing_vrs(item)


def _large_native_header(element: DataElement, implicit: bool) -> bytes | None:
    """The header pydicom writes before a large OB/OW value it writes as is (defined, even
    length: pydicom pads odd ones); None for anything else, which pydicom then writes."""
    value = element.value
    if not isinstance(value, bytes) or len(value) < _LARGE or len(value) % 2 or element.is_undefined_length:
        return None
    if implicit:
        return _IMPLICIT_HEADER.pack(element.tag >> 16, element.tag & 0xFFFF, len(value))
    if element.VR not in ("OB", "OW"):
        return None
    return _EXPLICIT_LONG_HEADER.pack(element.tag >> 16, element.tag & 0xFFFF, element.VR.encode(), 0, len(value))


def _copyable_syntax(ds: Dataset) -> UID | None:
    """The transfer syntax to write in, where pydicom would write the elements still as read as
    their bytes: a public little endian syntax that is not deflated, the one the dataset was read
    in, with the character set it was read with. None otherwise (and for what dcmwrite refuses)."""
    syntax = declared_syntax(ds)
    if (
        syntax is None
        or syntax.is_private
        or not syntax.is_transfer_syntax
        or not syntax.is_little_endian
        or syntax == DeflatedExplicitVRLittleEndian
        or ds.original_encoding != (syntax.is_implicit_VR, True)
        or any(tag >> 16 in (0, 2) for tag in ds.keys())
    ):
        return None
    charset = ds.get(_SPECIFIC_CHARACTER_SET)  # the element, which pydicom reads as dcmwrite does
    if ds.original_character_set != (convert_encodings(charset.value) if charset is not None else default_encoding):
        return None
    return syntax


def _file_head(ds: Dataset) -> bytes:
    """The preamble and File Meta Information that dcmwrite gives `ds`, written as dcmwrite does
    with `enforce_file_format` for a public syntax (the media storage UIDs taken from the dataset,
    missing required elements filled in), but on a shallow copy of the meta: dcmwrite deep-copies
    it, which cost more than all the rest of the head."""
    meta = FileMetaDataset()
    for element in ds.file_meta:
        if element.tag != _GROUP_LENGTH:  # written anew, with the length of what follows
            meta.add(copy.copy(element))  # filled-in values must not change `ds`'s own meta
    for keyword, own in (("MediaStorageSOPClassUID", "SOPClassUID"), ("MediaStorageSOPInstanceUID", "SOPInstanceUID")):
        current, wanted = meta.get(keyword), ds.get(own)
        if current is None or (wanted and wanted != current):
            setattr(meta, keyword, wanted)
    head = DicomBytesIO()
    head.write(getattr(ds, "preamble", None) or bytes(128))
    head.write(b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    return head.getvalue()


def _raw_header(element: RawDataElement, implicit: bool) -> bytes | None:
    """The tag, VR and length pydicom writes before a raw element's bytes; None where it does
    more than copy them (undefined length; a value too long for its VR's length field) or fails
    (no bytes, no VR), which pydicom then does as before."""
    value = element.value
    if not isinstance(value, bytes) or element.length == 0xFFFFFFFF:
        return None
    group, number = element.tag >> 16, element.tag & 0xFFFF
    if implicit:
        return _IMPLICIT_HEADER.pack(group, number, len(value))
    vr = element.VR
    if vr in EXPLICIT_VR_LENGTH_32:
        return _EXPLICIT_LONG_HEADER.pack(group, number, vr.encode(default_encoding), 0, len(value))
    if vr is None or len(vr) != 2 or len(value) > 0xFFFF:
        return None
    return _EXPLICIT_HEADER.pack(group, number, vr.encode(default_encoding), len(value))
