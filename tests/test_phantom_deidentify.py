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
import pytest

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
    for path in files:
        data = path.read_bytes()
        leaked = sorted(s for s in strings if s.encode() in data)
        assert not leaked, f"{path.name} contains fake PHI: {leaked[:3]}"
