"""part10 writes what pydicom's save_as writes, byte for byte, only faster where it can copy."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from node.deid.metadata import MetadataDeidentifier
from node.deid.part10 import part10, part10_pieces
from node.deid.phi import collect_header_phi
from node.deid.profile import load_profile
from node.deid.pseudonyms import DerivedMappings, KeyedDerivation
from tests.deid.samples import PROFILES, valid_test_files


@pytest.fixture(scope="module")
def metadata() -> MetadataDeidentifier:
    return MetadataDeidentifier(load_profile(PROFILES / "tcia.yaml"))


@pytest.mark.parametrize("path", valid_test_files(), ids=lambda path: path.name)
def test_the_written_file_is_byte_for_byte_what_save_as_writes(metadata: MetadataDeidentifier, path: Path) -> None:
    """part10 copies the elements still as read itself (any syntax, implicit or explicit VR,
    compressed or not) and leaves the rest to pydicom, or all of it where pydicom re-encodes."""
    copies = [pydicom.dcmread(path) for _ in range(2)]
    for ds in copies:
        metadata.apply(ds, DerivedMappings(KeyedDerivation(b"pipeline-test")), collect_header_phi(ds))
    expected = io.BytesIO()
    try:
        copies[0].save_as(expected, enforce_file_format=True)
    except Exception as exc:  # noqa: BLE001 - what pydicom cannot write, part10 cannot either
        with pytest.raises(type(exc)):
            part10(copies[1])
        return
    assert part10(copies[1]) == expected.getvalue()


def test_large_pixel_data_is_written_from_the_datasets_own_bytes(metadata: MetadataDeidentifier) -> None:
    """A large instance must not be copied once more into a file image: its pixel data is one of
    the pieces, the very bytes object the dataset holds, and the pieces make the same file."""
    ds = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))  # 921,600 bytes of pixels
    metadata.apply(ds, DerivedMappings(KeyedDerivation(b"pipeline-test")), collect_header_phi(ds))
    pieces = part10_pieces(ds)
    assert any(piece is ds.PixelData for piece in pieces)
    expected = io.BytesIO()
    ds.save_as(expected, enforce_file_format=True)
    assert b"".join(pieces) == expected.getvalue()
