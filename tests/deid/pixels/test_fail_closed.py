"""Anything the pixel step cannot finish or prove clean raises PixelCleaningError (quarantine)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames

from node.deid.phi import collect_header_phi
from node.deid.pixels import PixelCleaner, PixelCleaningError, PixelPolicyError
from tests.deid.pixels.conftest import POLICY, Clean
from tests.deid.pixels.judge import changed_pixels, decoded
from tests.deid.pixels.synthetic import PATIENT_ID, PATIENT_NAME, Font, Kind, image_dataset, text_block, text_mask


def _phi_free(message: str) -> bool:
    return not any(v.lower() in message.lower() for v in (PATIENT_NAME, "DOE", "JANE", PATIENT_ID, "BAPTIST"))


def _damaged(name: str, damage: Callable[[bytes], bytes]) -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file(name))
    frames = generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1)))
    ds.PixelData = encapsulate([damage(frame) for frame in frames])
    return ds


def _noise_after_header(frame: bytes) -> bytes:
    return frame[:64] + np.random.default_rng(7).integers(0, 256, len(frame) - 64, np.uint8).tobytes()


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("US1_J2KR.dcm", _noise_after_header),
        ("US1_J2KR.dcm", lambda frame: frame[: len(frame) // 3]),
        ("emri_small_jpeg_2k_lossless.dcm", lambda frame: frame[: len(frame) // 2]),
        ("emri_small_RLE.dcm", lambda frame: frame[:40]),
    ],
    ids=["j2k-noise", "j2k-truncated", "j2k-multiframe-truncated", "rle-truncated"],
)
def test_corrupted_compressed_pixel_data_fails_closed(clean: Clean, name: str, damage: Callable[[bytes], bytes]) -> None:
    ds = _damaged(name, damage)
    with pytest.raises(PixelCleaningError) as error:
        clean(ds)
    assert _phi_free(str(error.value))


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pixel-policy.yaml"
    path.write_text(text)
    return path


def test_phi_left_after_masking_fails_closed(tmp_path: Path) -> None:
    """A policy that searches no text (action skip) but has a region rule over the first line: the
    rule's box goes, the labelled line below stays; the second look (the other reader, on the whole
    masked frame) reads the label ("DOB:"): the search missed text, so no second round."""
    (tmp_path / "regions.yaml").write_text(
        "rules:\n  - name: corner\n    when: {Manufacturer: {equals: SYNTHETIC}}\n    boxes: [[0, 0, 128, 24]]\n"
    )
    policy = _policy(
        tmp_path, "regions: regions.yaml\ndefault: {action: skip}\nverify: {full_frame_actions: [skip]}\n"
        f"deny: {{vocabulary: {POLICY.parent / 'pixel-vocabulary.yaml'}}}\n"  # where the labels are
    )
    mask = text_block(256, 256, Font("DejaVuSans.ttf", 12), ("DOE JANE", "DOB: 03.14.1962"), x=6, y=6)
    ds = image_dataset(Kind("MONOCHROME2", 12), "CT", mask)
    with pytest.raises(PixelCleaningError, match="verification") as error:
        PixelCleaner.from_policy_file(policy).clean(ds, collect_header_phi(ds))
    assert _phi_free(str(error.value))


def _garbled_at_first() -> tuple[pydicom.Dataset, np.ndarray]:
    """An oblique monospaced block whose birth date tesseract 5.3 first reads as "62 -JAN-2970",
    which matches nothing in the header; once the lines around it are masked, the verification's
    new look at that line reads "01-JAN-1970"."""
    lines = ("DOE, JANE", PATIENT_ID, "01-JAN-1970", "31.01.2024")
    mask = text_block(384, 384, Font("DejaVuSansMono-Oblique.ttf", 10), lines, x=128, y=300)
    return image_dataset(Kind("MONOCHROME2", 16, signed=True), "CT", mask), mask


def _phi_scope(tmp_path: Path, **verify: int) -> Path:
    """The shipped policy masking PHI only (as before deny by default): what the search reads
    garbled stays, and the verification's new look is what finds it."""
    shipped = yaml.safe_load(POLICY.read_text())
    shipped["regions"] = str(POLICY.parent / shipped["regions"])
    shipped["deny"]["vocabulary"] = str(POLICY.parent / shipped["deny"]["vocabulary"])
    shipped["default"]["mask"] = "phi"
    shipped["verify"].update(verify)
    return _policy(tmp_path, yaml.safe_dump(shipped))


def test_phi_first_read_on_verification_is_masked_and_verified_again(tmp_path: Path) -> None:
    ds, mask = _garbled_at_first()
    before = decoded(ds)
    outcome = PixelCleaner.from_policy_file(_phi_scope(tmp_path)).clean(ds, collect_header_phi(ds))
    assert outcome.redacted
    assert "phi read on verification" in outcome.reason
    assert changed_pixels(before, decoded(ds))[0][mask].mean() >= 0.99


def test_phi_read_on_verification_fails_closed_without_remask_rounds(tmp_path: Path) -> None:
    ds, _ = _garbled_at_first()
    with pytest.raises(PixelCleaningError, match="verification") as error:
        PixelCleaner.from_policy_file(_phi_scope(tmp_path, remask_rounds=0)).clean(ds, collect_header_phi(ds))
    assert _phi_free(str(error.value))


def test_timeout_fails_closed() -> None:
    mask = text_mask(256, 256, Font("DejaVuSans.ttf", 8))
    ds = image_dataset(Kind("MONOCHROME2", 12), "CT", mask)
    cleaner = PixelCleaner.from_policy_file(POLICY, timeout_seconds=1e-6)
    with pytest.raises(PixelCleaningError, match="timed out"):
        cleaner.clean(ds, collect_header_phi(ds))


def test_malformed_policy_names_file_and_rule(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "rules:\n  - name: ultrasound-all-text\n    when: {modality: [US]}\n    action: blur\n")
    with pytest.raises(PixelPolicyError) as error:
        PixelCleaner.from_policy_file(policy)
    assert str(policy) in str(error.value) and "ultrasound-all-text" in str(error.value)


def test_malformed_region_rule_names_file_and_rule(tmp_path: Path) -> None:
    (tmp_path / "regions.yaml").write_text(
        "rules:\n  - name: broken-box\n    when: {Rows: {equals: '512'}}\n    boxes: [[0, 0, 10]]\n"
    )
    policy = _policy(tmp_path, "regions: regions.yaml\n")
    with pytest.raises(PixelPolicyError) as error:
        PixelCleaner.from_policy_file(policy)
    assert "regions.yaml" in str(error.value) and "broken-box" in str(error.value)
