"""The benchmark corpora of issue 7, written as DICOM files with fresh UIDs so that every
instance is new to the node and to the destination.

(a) `ct`: uncompressed 512x512 CT slices of one study (pydicom's CT_small, upscaled);
(b) `mixed`: the network test corpus (every transfer syntax, compressed and multi-frame files);
(c) `us`: ultrasound and obstetric images that the pixel policy scans for burned-in text;
plus one large multi-frame instance for the memory measurement.

    python bench/corpora.py ct /tmp/corpus-ct --instances 1000

Synthetic PHI only ("TESTPATIENT^ALPHA"); pydicom's public test files keep their own test values.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from itertools import cycle, islice
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.corpus import network_corpus  # noqa: E402
from tests.synthetic import synthetic_ct  # noqa: E402

CT_SIDE = 512
# Ultrasound/OB images of pydicom and pydicom-data, single- and multi-frame, raw and compressed.
ULTRASOUND = ("US1_UNCR.dcm", "US1_J2KR.dcm", "OBXXXX1A.dcm", "OBXXXX1A_2frame.dcm", "examples_ybr_color.dcm")
# Defaults from the issue: 1,000+ CT slices; the slower corpora are smaller by default.
DEFAULT_INSTANCES = {"ct": 1000, "mixed": 200, "us": 10}


def _renewed(ds: pydicom.Dataset, study: str, series: str) -> pydicom.Dataset:
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _write(datasets: Iterator[pydicom.Dataset], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, ds in enumerate(datasets):
        path = directory / f"{number:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _ct_slices(count: int) -> Iterator[pydicom.Dataset]:
    study, series = generate_uid(), generate_uid()
    template = synthetic_ct(study_uid=study, series_uid=series)
    scale = CT_SIDE // int(template.Rows)
    pixels = np.kron(template.pixel_array, np.ones((scale, scale), dtype=template.pixel_array.dtype))
    encoded = pixels.tobytes()
    for number in range(count):
        ds = _renewed(template.copy(), study, series)
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = encoded
        ds.InstanceNumber = number + 1
        yield ds


def _recycled(paths: list[Path], count: int) -> Iterator[pydicom.Dataset]:
    """`count` instances cycling over `paths`, each a new instance of a new series of its study."""
    study_of: dict[str, str] = {}
    for path in islice(cycle(paths), count):
        ds = pydicom.dcmread(path)
        study = study_of.setdefault(str(ds.StudyInstanceUID), generate_uid())
        yield _renewed(ds, study, generate_uid())


def _savable(paths: list[Path]) -> list[Path]:
    """Files pydicom can write back in their own transfer syntax (not big endian ones)."""
    return [path for path in paths if read_file_meta_info(path).TransferSyntaxUID.is_little_endian]


def ct(directory: Path, count: int) -> list[Path]:
    return _write(_ct_slices(count), directory)


def mixed(directory: Path, count: int) -> list[Path]:
    return _write(_recycled(_savable(network_corpus()), count), directory)


def ultrasound(directory: Path, count: int) -> list[Path]:
    sources = [Path(str(get_testdata_file(name))) for name in ULTRASOUND if get_testdata_file(name)]
    return _write(_recycled(sources, count), directory)


def large_multiframe(directory: Path, megabytes: int) -> Path:
    """One uncompressed multi-frame CT of about `megabytes` MB (512x512 16-bit frames, 0.5 MB each)."""
    template = next(_ct_slices(1))
    frame = template.PixelData
    frames = max(1, megabytes * 1024 * 1024 // len(frame))
    template.NumberOfFrames = frames
    template.PixelData = frame * frames
    template.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return _write(iter([template]), directory)[0]


CORPORA: dict[str, Callable[[Path, int], list[Path]]] = {"ct": ct, "mixed": mixed, "us": ultrasound}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", choices=sorted(CORPORA))
    parser.add_argument("directory", type=Path)
    parser.add_argument("--instances", type=int, help="default: " + str(DEFAULT_INSTANCES))
    args = parser.parse_args(argv)
    paths = CORPORA[args.corpus](args.directory, args.instances or DEFAULT_INSTANCES[args.corpus])
    print(f"{len(paths)} files, {sum(p.stat().st_size for p in paths) / 1e6:.1f} MB in {args.directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
