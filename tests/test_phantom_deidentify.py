"""End to end: the phantom's fake PHI (burned-in text, ECG, DICOM tags) is gone after
de-identification, from the pixels of PNG and DICOM frames and from every output file.

The raw phantom frames carry fake PHI outside the scan sector and, with --dicom, in their tags
(PatientName, PatientID, birth date, institution, referring physician, study date/time,
accession number, a private tag); `phi_truth.json` lists the strings and `phi_mask_path` the
pixels. Acceptance (foundation issue): 100 % of fake-PHI pixels blanked, and no fake-PHI string
in any output file (images' metadata, CSV, JSON, DICOM tags).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID_dictionary

from data_prep import deidentify, phantom
from data_prep.io import read_grayscale


@pytest.fixture(scope="module")
def deidentified(tmp_path_factory):
    base = tmp_path_factory.mktemp("phantom_deid")
    raw = base / "raw"
    phantom.generate_phantom("pgds", "ci", raw, seed=3, dicom=True, progress=False)
    outputs = {}
    for name in ("manifest.csv", "manifest_dicom.csv"):
        out = base / f"deid_{Path(name).stem}"
        deidentify.deidentify_folder(None, out, manifest=raw / name, progress_every=10_000)
        outputs[name] = out
    return raw, outputs


def _phi_strings(raw: Path) -> set[str]:
    truth = json.loads((raw / "phi_truth.json").read_text())["cases"]
    strings: set[str] = set()
    for fields in truth.values():
        for key, value in fields.items():
            values = value if isinstance(value, list) else [value]
            strings.update(str(v) for v in values if len(str(v)) >= 6)
    # A person name may also be written with a space instead of DICOM's '^'. (Single name
    # components are not searched: 'PHANTOM' is both a fake surname and the generator's
    # Manufacturer tag, which is not PHI.)
    strings.update(s.replace("^", " ") for s in list(strings) if "^" in s)
    return strings


@pytest.mark.parametrize("manifest_name", ["manifest.csv", "manifest_dicom.csv"])
def test_every_fake_phi_pixel_is_blanked(deidentified, manifest_name):
    raw, outputs = deidentified
    rows = pd.read_csv(raw / manifest_name, dtype=str, keep_default_na=False)
    blanked = total = 0
    for row in rows.itertuples():
        phi = read_grayscale(raw / row.phi_mask_path) > 0
        before = read_grayscale(raw / row.image_path)
        after = read_grayscale(outputs[manifest_name] / row.image_path)
        assert before[phi].max() > 0, "the raw frame should carry burned-in PHI"
        total += int(phi.sum())
        blanked += int((after[phi] == 0).sum())
    assert total > 0
    assert blanked == total, f"{total - blanked} of {total} fake-PHI pixels survive"


def test_no_fake_phi_string_in_any_output_file(deidentified):
    raw, outputs = deidentified
    strings = _phi_strings(raw)
    assert len(strings) > 20
    # Sanity: the raw DICOM files do carry them, so the search below can find a leak.
    raw_bytes = b"".join(p.read_bytes() for p in sorted((raw / "dicom").glob("*.dcm"))[:3])
    assert any(s.encode() in raw_bytes for s in strings)
    files = [p for out in outputs.values() for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".dcm" for p in files) and any(p.suffix == ".json" for p in files)
    raw_uids = {uid for path in (raw / "dicom").glob("*.dcm") for uid in _uids(path)}
    assert raw_uids
    for path in files:
        data = _bytes_without_fresh_uids(path, raw_uids)
        leaked = sorted(s for s in strings if s.encode() in data)
        assert not leaked, f"{path.name} contains fake PHI: {leaked[:3]}"


def _uids(path: Path) -> set[str]:
    """Every UID value in a DICOM file, its file meta included."""
    ds = pydicom.dcmread(path)
    uids: set[str] = set()
    for element in [*ds.file_meta.iterall(), *ds.iterall()]:
        if element.VR == "UI" and element.value:
            values = element.value if element.VM > 1 else [element.value]
            uids.update(str(v).strip("\x00 ") for v in values)
    return uids


def _bytes_without_fresh_uids(path: Path, raw_uids: set[str]) -> bytes:
    """The file's bytes with the UIDs the de-identifier generated taken out.

    A fresh UID (pydicom's generate_uid) is a root and ~38 random digits, so a 6-digit fake study
    time turns up inside one now and then (CI saw '095156') without anything having leaked. The
    UIDs are checked instead: each is a registered one (SOP class, transfer syntax), pydicom's
    ImplementationClassUID, or fresh: never one of the raw files' UIDs.
    """
    data = path.read_bytes()
    if path.suffix != ".dcm":
        return data
    for uid in _uids(path):
        if uid in UID_dictionary or uid == PYDICOM_IMPLEMENTATION_UID:
            continue
        assert uid not in raw_uids, f"{path.name}: UID {uid} kept from the raw files"
        data = data.replace(uid.encode(), b"")
    return data


@pytest.fixture(scope="module")
def cropped(tmp_path_factory, deidentified):
    raw, _ = deidentified
    out = tmp_path_factory.mktemp("phantom_crop") / "deid"
    report = deidentify.deidentify_folder(None, out, manifest=raw / "manifest.csv", crop=True,
                                          progress_every=10_000)
    return raw, out, report


def test_crop_keeps_the_sector_and_its_masks_aligned(cropped):
    """--crop: each frame is its blanked self cut to the sector's box, its truth and PHI masks
    are cut with the same box, and crop_to_sector (what predict does in memory) agrees."""
    raw, out, report = cropped
    rows = pd.read_csv(raw / "manifest.csv", dtype=str, keep_default_na=False)
    by_image = report.set_index("image_path")
    assert report["cropped"].all()
    for row in rows.itertuples():
        box = by_image.loc[row.image_path, ["sector_x0", "sector_y0", "sector_x1", "sector_y1"]]
        x0, y0, x1, y1 = (int(v) for v in box)
        before = read_grayscale(raw / row.image_path)
        after = read_grayscale(out / row.image_path)
        assert after.shape == (y1 - y0, x1 - x0) and after.shape < before.shape
        np.testing.assert_array_equal(after, deidentify.crop_to_sector(before))
        for column in ("mask_path", "phi_mask_path"):
            path = getattr(row, column)
            if path:
                mask = read_grayscale(out / path)
                np.testing.assert_array_equal(mask, read_grayscale(raw / path)[y0:y1, x0:x1])
        if row.mask_path:  # the truth mask (abnormal structure) lies inside the sector
            assert read_grayscale(out / row.mask_path).sum() == read_grayscale(raw / row.mask_path).sum()


def test_crop_of_dicom_frames_matches_the_png_crop(tmp_path, cropped):
    """--crop on the DICOM copies: Rows/Columns become the sector box, pixels equal the PNG's."""
    import pydicom

    raw, png_out, _ = cropped
    out = tmp_path / "deid_dicom"
    deidentify.deidentify_folder(None, out, manifest=raw / "manifest_dicom.csv", crop=True,
                                 progress_every=0)
    rows = pd.read_csv(raw / "manifest_dicom.csv", dtype=str, keep_default_na=False).head(4)
    pngs = pd.read_csv(raw / "manifest.csv", dtype=str, keep_default_na=False).head(4)
    for dicom_rel, png_rel in zip(rows["image_path"], pngs["image_path"]):
        ds = pydicom.dcmread(out / dicom_rel)
        png = read_grayscale(png_out / png_rel)
        assert (int(ds.Rows), int(ds.Columns)) == png.shape
        np.testing.assert_array_equal(read_grayscale(out / dicom_rel), png)


def test_crop_refuses_a_mask_of_another_size(tmp_path, deidentified):
    import cv2

    raw, _ = deidentified
    rows = pd.read_csv(raw / "manifest.csv", dtype=str, keep_default_na=False)
    source = tmp_path / "raw"
    (source / "images").mkdir(parents=True)
    (source / "masks").mkdir()
    row = rows.iloc[0]
    (source / row.image_path).write_bytes((raw / row.image_path).read_bytes())
    cv2.imwrite(str(source / row.mask_path), np.zeros((10, 12), np.uint8))
    rows.iloc[:1][["image_path", "case_id", "label", "mask_path"]].to_csv(
        source / "manifest.csv", index=False)
    with pytest.raises(deidentify.InputError, match="mask is 12x10 but its image is"):
        deidentify.deidentify_folder(None, tmp_path / "out", manifest=source / "manifest.csv",
                                     crop=True, progress_every=0)
    assert not (tmp_path / "out").exists()
