"""Tests for data_prep.deidentify: sector masking, burned-in overlays, DICOM profile, files.

Real frames: every HC18 head mask must stay >= 99% kept while the grey bar and the "Voluson"
label box at the left edge are blanked; the Pgds frames keep >= 95% of their non-dark pixels.
Synthetic frames: text, grey-scale bar and ECG trace 100% blanked, >= 99% of the fan kept.
DICOM: no fake PHI string survives anywhere in the output bytes or the reports.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from data_prep import deidentify as deid
from data_prep.errors import InputError
from data_prep.io import ImageReadError, read_grayscale, write_dicom_grayscale

# ----------------------------------------------------------------------------- synthetic frames

FAN_APEX = (400, -60)
FAN_RADII = (110, 560)
FAN_HALF_ANGLE = 35


def _speckle(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    speckle = cv2.GaussianBlur(rng.rayleigh(scale=45.0, size=shape) + 25.0, (0, 0), 1.0)
    return np.clip(speckle, 1, 255).astype(np.uint8)


def synthetic_fan_frame(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """800x540 speckled fan with burned-in text, a grey-scale bar and an ECG trace outside it.

    Returns (frame, fan_mask, overlay_mask). The "MI 1.2 TIS 0.4" label sits inside the fan's
    bounding box but outside the fan (12-26 px from its arc).
    """
    height, width = 540, 800
    fan = np.zeros((height, width), np.uint8)
    cv2.ellipse(fan, FAN_APEX, (FAN_RADII[1],) * 2, 90, -FAN_HALF_ANGLE, FAN_HALF_ANGLE, 1, -1)
    cv2.ellipse(fan, FAN_APEX, (FAN_RADII[0],) * 2, 90, -FAN_HALF_ANGLE, FAN_HALF_ANGLE, 0, -1)
    frame = np.where(fan > 0, _speckle((height, width), seed), 0).astype(np.uint8)
    overlay = np.zeros((height, width), np.uint8)
    cv2.putText(overlay, "DOE^JANE 1980-01-02", (8, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 255, 2)
    cv2.putText(overlay, "ID 12345678", (8, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 200, 1)
    cv2.putText(overlay, "MI 1.2 TIS 0.4", (95, 480), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 230, 1)
    overlay[120:420, 770:782] = np.linspace(250, 5, 300).astype(np.uint8)[:, None]  # grey bar
    xs = np.arange(150, 650)
    ys = (525 + 8 * np.sin(xs / 7.0) * (np.abs(np.sin(xs / 40.0)) > 0.9)).astype(np.int32)
    cv2.polylines(overlay, [np.stack([xs, ys], 1).reshape(-1, 1, 2)], False, 255, 2)  # ECG
    assert not (overlay.astype(bool) & fan.astype(bool)).any()
    return np.maximum(frame, overlay), fan.astype(bool), overlay.astype(bool)


def synthetic_linear_frame(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-probe rectangle with a name below it and a hospital name beside it."""
    frame = np.zeros((540, 800), np.uint8)
    sector = np.zeros((540, 800), bool)
    sector[40:480, 150:650] = True
    frame[sector] = _speckle((540, 800), seed)[sector]
    overlay = np.zeros((540, 800), np.uint8)
    cv2.putText(overlay, "DOE^JANE", (160, 520), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2)
    cv2.putText(overlay, "ST MARY", (662, 100), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
    return np.maximum(frame, overlay), sector, overlay.astype(bool)


def synthetic_full_frame(seed: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 440x400 frame that is all speckle (already cropped to the anatomy), dark fluid inside."""
    frame = _speckle((400, 440), seed)
    cv2.circle(frame, (220, 200), 70, 2, -1)  # dark fluid must be kept, not blanked
    return frame, np.ones(frame.shape, bool), np.zeros(frame.shape, bool)


def _jpeg_roundtrip(frame: np.ndarray, quality: int = 75) -> np.ndarray:
    ok, buffer = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)


# ----------------------------------------------------------------------------- find_scan_sector


@pytest.mark.parametrize("builder, transform, lossy, kind", [
    (synthetic_fan_frame, None, None, "fan"),
    (synthetic_fan_frame, "jpeg", True, "fan"),
    (synthetic_fan_frame, "uint16", None, "fan"),
    (synthetic_linear_frame, None, None, "rectangle"),
    (synthetic_full_frame, None, None, "full-frame"),
])
def test_synthetic_overlays_blanked_and_sector_kept(builder, transform, lossy, kind):
    frame, sector, overlay = builder()
    if transform == "jpeg":
        frame = _jpeg_roundtrip(frame)
    elif transform == "uint16":
        frame = frame.astype(np.uint16) * 257
    result = deid.find_scan_sector(frame, lossy=lossy)
    out = deid.blank_outside_sector(frame, result.mask)
    assert result.kind == kind
    assert result.mask.shape == frame.shape and result.mask.dtype == bool
    assert out.dtype == frame.dtype and out.shape == frame.shape
    assert not out[overlay].any(), f"{int(np.count_nonzero(out[overlay]))} overlay pixels kept"
    assert result.mask[sector].mean() >= 0.99
    x0, y0, x1, y1 = result.bbox
    ys, xs = np.nonzero(sector)
    assert abs(x0 - xs.min()) <= 4 and abs(y0 - ys.min()) <= 4
    assert abs(x1 - 1 - xs.max()) <= 4 and abs(y1 - 1 - ys.max()) <= 4


def test_label_box_on_the_anatomy_is_blanked():
    """A dark label box drawn ON the sector (as in HC18) is removed, the rest is kept."""
    frame, sector, _ = synthetic_linear_frame()
    box = (slice(60, 82), slice(170, 200))  # rows, cols: 22x30 px inside the rectangle
    frame[box] = 2
    cv2.putText(frame, "E4", (174, 78), cv2.FONT_HERSHEY_PLAIN, 1.0, 20, 1)
    result = deid.find_scan_sector(frame)
    assert not result.mask[box].any()
    sector_outside_box = sector.copy()
    sector_outside_box[58:84, 168:202] = False
    assert result.mask[sector_outside_box].mean() >= 0.99
    assert len(result.overlay_boxes) >= 1


def _label(frame: np.ndarray, x: int, y: int) -> None:
    """Burn a 30x22 label box (background 2, two lines of grey text) at (x, y)."""
    frame[y:y + 22, x:x + 30] = 2
    cv2.putText(frame, "Vol", (x + 2, y + 9), cv2.FONT_HERSHEY_PLAIN, 0.6, 22, 1)
    cv2.putText(frame, "E4", (x + 8, y + 20), cv2.FONT_HERSHEY_PLAIN, 0.6, 22, 1)


def test_label_templates_find_a_label_on_dark_anatomy():
    """A label on bright anatomy is found and learnt; on dark anatomy only the template finds it."""
    clear, _, _ = synthetic_linear_frame()
    _label(clear, 200, 60)
    hidden, sector, _ = synthetic_linear_frame(seed=3)
    fluid = np.zeros(hidden.shape, np.uint8)
    cv2.ellipse(fluid, (215, 72), (60, 35), 20, 0, 360, 1, -1)  # dark fluid around the label
    noise = np.random.default_rng(0).integers(1, 6, hidden.shape).astype(np.uint8)
    hidden[fluid > 0] = noise[fluid > 0]
    _label(hidden, 200, 60)
    learnt = deid.find_scan_sector(clear).label_templates
    assert len(learnt) == 1 and learnt[0].shape == (22, 30)
    assert deid.find_scan_sector(hidden).mask[60:82, 200:230].any()  # missed without templates
    result = deid.find_scan_sector(hidden, templates=learnt)
    assert not result.mask[60:82, 200:230].any()
    outside_label = sector.copy()
    outside_label[58:84, 198:232] = False
    assert result.mask[outside_label].mean() >= 0.99
    # a frame without the label gets no match
    plain = deid.find_scan_sector(synthetic_linear_frame(seed=4)[0], templates=learnt)
    assert plain.overlay_boxes == ()


def test_empty_frame_is_fully_blanked():
    result = deid.find_scan_sector(np.zeros((100, 120), np.uint8))
    assert result.kind == "none" and not result.mask.any()


def test_find_scan_sector_is_deterministic():
    frame, _, _ = synthetic_fan_frame()
    first, second = deid.find_scan_sector(frame), deid.find_scan_sector(frame)
    assert np.array_equal(first.mask, second.mask) and first.bbox == second.bbox


@pytest.mark.parametrize("shape", [(6, 8), (6, 8, 3), (2, 6, 8), (2, 6, 8, 3)])
def test_blank_outside_sector_shapes(shape):
    image = np.full(shape, 7, np.uint8)
    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:6] = True
    out = deid.blank_outside_sector(image, mask)
    assert out.shape == image.shape and (image == 7).all()  # input untouched
    kept = out[..., 1:4, 2:6, :] if len(shape) in (3, 4) and shape[-1] == 3 else out[..., 1:4, 2:6]
    assert (kept == 7).all()
    assert int(out.sum()) == 7 * kept.size


def test_blank_outside_sector_rejects_wrong_mask():
    with pytest.raises(ValueError):
        deid.blank_outside_sector(np.zeros((6, 8), np.uint8), np.zeros((5, 8), bool))


def test_speed_per_800x540_frame(hc18_dir):
    frames = [read_grayscale(path) for path in sorted(hc18_dir.glob("*HC.png"))[:10]]
    deid.blank_outside_sector(frames[0], deid.find_scan_sector(frames[0]).mask)  # warm up
    started = time.process_time()
    for frame in frames:
        deid.blank_outside_sector(frame, deid.find_scan_sector(frame).mask)
    cpu_ms = 1000 * (time.process_time() - started) / len(frames)
    print(f"find_scan_sector + blank: {cpu_ms:.1f} ms CPU per 800x540 frame")
    assert cpu_ms < 100


# ----------------------------------------------------------------------------- real frames

# Where HC18's burned-in overlays sit, found by looking at the frames: a vertical grey-scale
# bar (values 243 -> 2) at the left edge, and a dark 28x21 label box with two lines of grey
# text (the scanner's name) near the top; the box moves left-right between frames, so the
# test finds it in each frame by matching the box as cut from 023_2HC (rows 25-45, cols 28-55).
HC18_BAR = (slice(24, 186), slice(3, 12))
HC18_LABEL_SOURCE = ("023_2HC.png", slice(25, 46), slice(28, 56))


def _locate_label(frame: np.ndarray, label: np.ndarray) -> tuple[slice, slice]:
    error = cv2.matchTemplate(frame[:120].astype(np.float32), label.astype(np.float32),
                              cv2.TM_SQDIFF) / label.size
    best, _, (x, y), _ = cv2.minMaxLoc(error)
    assert best < 0.5 * label.var(), "label box not found in the original frame"
    return slice(y, y + label.shape[0]), slice(x, x + label.shape[1])


@pytest.mark.shared_data
def test_hc18_heads_kept_and_left_overlays_blanked(hc18_dir, tmp_path):
    report = deid.deidentify_folder(hc18_dir, tmp_path / "out", progress_every=0)
    images = sorted(hc18_dir.glob("*HC.png"))
    assert len(images) == 40
    name, rows, cols = HC18_LABEL_SOURCE
    label = read_grayscale(hc18_dir / name)[rows, cols]
    text = label > 4  # the glyphs; the box background is 2
    kept_fractions, with_bar = [], 0
    for path in images:
        original = read_grayscale(path)
        out = read_grayscale(tmp_path / "out" / path.name)
        head = read_grayscale(path.with_name(path.stem + "_Mask.png")) > 127
        assert out.shape == original.shape and out.dtype == original.dtype
        kept_fractions.append(float(np.mean(out[head] == original[head])))
        bar = original[HC18_BAR] > 0
        with_bar += bar.any()
        assert not out[HC18_BAR][bar].any(), f"{path.name}: grey bar not blanked"
        where = _locate_label(original, label)
        assert not out[where].any(), f"{path.name}: label box not blanked"
        assert (original[where][text] > 4).mean() > 0.9  # the text really was there
    print(f"HC18 head-mask kept fraction: min {min(kept_fractions):.4f} over {len(images)} frames; "
          f"{with_bar} frames with the bar, 40 with the label box")
    assert min(kept_fractions) >= 0.99
    assert with_bar >= 30  # the bar check above is not vacuous
    rows = report.set_index("image_path")
    assert set(rows.index) >= {path.name for path in images}
    assert (rows.loc[[p.name for p in images], "n_overlays"] >= 1).sum() >= 30


@pytest.mark.shared_data
def test_pgds_frames_read_and_face_kept(pgds_sample_dir, tmp_path):
    report = deid.deidentify_folder(pgds_sample_dir, tmp_path / "out", progress_every=0)
    assert len(report) == 8
    kept = []
    for rel in report["image_path"]:
        original = read_grayscale(pgds_sample_dir / rel)
        out = read_grayscale(tmp_path / "out" / rel)
        assert out.shape == original.shape == (400, 440)
        signal = original > 20
        # JPEG is re-encoded: "kept" = not blanked to black.
        kept.append(float(np.mean(out[signal] > 0)))
    print(f"Pgds non-dark pixels kept: min {min(kept):.4f}, mean {np.mean(kept):.4f}")
    assert min(kept) >= 0.95


# ----------------------------------------------------------------------------- DICOM

PHI = {
    "PatientName": "ZZDOE^JANEPHI",
    "PatientID": "PID99887766",
    "PatientBirthDate": "19800102",
    "InstitutionName": "St Phi Hospital Xyzzy",
    "ReferringPhysicianName": "ZZREFER^DOCPHI",
    "StudyDate": "20200317",
    "AccessionNumber": "ACC5544332211",
    "OperatorsName": "ZZOPERATOR^SONOPHI",
    "StationName": "STATIONPHI42",
    "DeviceSerialNumber": "SERIALPHI777",
}
PRIVATE_VALUE = "PRIVATEPHI-31337"
NESTED_NAME = "ZZNESTED^NAMEPHI"
STUDY_UID = "1.2.826.0.1.3680043.9.7777.1"
SERIES_UID = "1.2.826.0.1.3680043.9.7777.1.2"
SOP_UIDS = ("1.2.826.0.1.3680043.9.7777.1.2.3", "1.2.826.0.1.3680043.9.7777.1.2.4")
FRAME_OF_REFERENCE_UID = "1.2.826.0.1.3680043.9.7777.5"


def _write_phi_dicom(path: Path, sop_uid: str, frames: np.ndarray) -> None:
    tags = dict(PHI, StudyInstanceUID=STUDY_UID, SeriesInstanceUID=SERIES_UID,
                SOPInstanceUID=sop_uid, FrameOfReferenceUID=FRAME_OF_REFERENCE_UID,
                StudyTime="101112", PatientAge="034Y", PatientSex="F", PatientWeight="61")
    write_dicom_grayscale(path, frames, extra_tags=tags)
    ds = pydicom.dcmread(path)
    block = ds.private_block(0x0009, "PHI VENDOR", create=True)
    block.add_new(0x01, "LO", PRIVATE_VALUE)
    item = Dataset()
    item.SeriesInstanceUID = SERIES_UID
    item.ScheduledPerformingPhysicianName = NESTED_NAME  # X, found only by the recursive walk
    item.PersonName = NESTED_NAME  # D
    ds.ReferencedSeriesSequence = Sequence([item])
    ds.save_as(path, enforce_file_format=True)


def _phi_strings() -> list[str]:
    return list(PHI.values()) + [PRIVATE_VALUE, NESTED_NAME, STUDY_UID, SERIES_UID, *SOP_UIDS,
                                 FRAME_OF_REFERENCE_UID, "PHI VENDOR"]


def test_basic_profile_table_is_valid():
    assert len(deid.BASIC_PROFILE_ACTIONS) >= 600
    for keyword, action in deid.BASIC_PROFILE_ACTIONS.items():
        assert tag_for_keyword(keyword) is not None, keyword
        assert action in ("D", "Z", "X", "U"), keyword
        if action == "U":
            assert dictionary_VR(tag_for_keyword(keyword)) == "UI", keyword
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName",
                    "ReferringPhysicianName", "StudyDate", "AccessionNumber", "StudyInstanceUID",
                    "SeriesInstanceUID", "SOPInstanceUID", "OtherPatientIDs", "StationName"):
        assert keyword in deid.BASIC_PROFILE_ACTIONS, keyword
    assert len(deid.DEIDENTIFICATION_METHOD) <= 64  # LO


def test_deidentify_dataset_actions_and_consistent_uids(tmp_path):
    frame = synthetic_fan_frame()[0]
    paths = [tmp_path / "a.dcm", tmp_path / "b.dcm"]
    for path, sop in zip(paths, SOP_UIDS):
        _write_phi_dicom(path, sop, frame)
    uid_map: dict[str, str] = {}
    datasets = [pydicom.dcmread(path) for path in paths]
    affected = [deid.deidentify_dataset(ds, uid_map) for ds in datasets]
    first, second = datasets
    assert first.StudyInstanceUID == second.StudyInstanceUID != STUDY_UID
    assert first.SeriesInstanceUID == second.SeriesInstanceUID != SERIES_UID
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert first.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    assert "ScheduledPerformingPhysicianName" not in first.ReferencedSeriesSequence[0]
    assert first.ReferencedSeriesSequence[0].PersonName == "ANONYMOUS"
    for keyword, expected in [("PatientName", ""), ("PatientID", ""), ("PatientBirthDate", ""),
                              ("StudyDate", ""), ("AccessionNumber", ""),
                              ("ReferringPhysicianName", ""), ("PatientSex", "")]:
        assert keyword in first and str(first.data_element(keyword).value or "") == expected
    for keyword in ("InstitutionName", "OperatorsName", "StationName", "DeviceSerialNumber",
                    "PatientAge", "PatientWeight"):
        assert keyword not in first
    assert not any(element.tag.is_private for element in first.iterall())
    assert first.PatientIdentityRemoved == "YES"
    assert first.DeidentificationMethod == deid.DEIDENTIFICATION_METHOD
    assert first.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert {"PatientName", "StudyInstanceUID", "InstitutionName"} <= set(affected[0])
    assert any(name.startswith("(0009,") for name in affected[0])
    assert len(uid_map) >= 4


@pytest.mark.parametrize("multi_frame", [False, True])
def test_dicom_files_carry_no_phi(tmp_path, multi_frame):
    frame, fan, overlay = synthetic_fan_frame()
    frames = np.stack([frame, frame]) if multi_frame else frame
    source = tmp_path / "in"
    source.mkdir()
    for index, sop in enumerate(SOP_UIDS):
        _write_phi_dicom(source / f"image{index}.dcm", sop, frames)
    report = deid.deidentify_folder(source, tmp_path / "out", progress_every=0)
    outputs = [tmp_path / "out" / f"image{index}.dcm" for index in range(2)]
    texts = [path.read_bytes() for path in outputs]
    texts += [(tmp_path / "out" / name).read_bytes()
              for name in (deid.REPORT_CSV, deid.REPORT_JSON)]
    for needle in _phi_strings():
        for blob in texts:
            assert needle.encode() not in blob, needle
    datasets = [pydicom.dcmread(path) for path in outputs]
    assert datasets[0].StudyInstanceUID == datasets[1].StudyInstanceUID
    assert datasets[0].SeriesInstanceUID == datasets[1].SeriesInstanceUID
    assert datasets[0].SOPInstanceUID != datasets[1].SOPInstanceUID
    for ds in datasets:
        assert ds.BurnedInAnnotation == "NO" and ds.PatientIdentityRemoved == "YES"
        pixels = ds.pixel_array.reshape((-1,) + frame.shape)
        assert pixels.shape[0] == (2 if multi_frame else 1)
        assert not pixels[:, overlay].any()
        assert (pixels[:, fan] == frame[fan]).mean() >= 0.99
    row = report.iloc[0]
    assert row["format"] == "dicom" and row["frames"] == (2 if multi_frame else 1)
    assert "PatientName" in row["dicom_emptied"] and "InstitutionName" in row["dicom_removed"]
    assert "StudyInstanceUID" in row["dicom_uids_replaced"]
    assert row["dicom_private_removed"] >= 1


def test_monochrome1_dicom_is_blanked_to_its_black(tmp_path):
    frame, fan, overlay = synthetic_fan_frame()
    write_dicom_grayscale(tmp_path / "in.dcm", 255 - frame, photometric="MONOCHROME1",
                          extra_tags={"PatientName": PHI["PatientName"]})
    deid.deidentify_file(tmp_path / "in.dcm", tmp_path / "out.dcm")
    stored = pydicom.dcmread(tmp_path / "out.dcm").pixel_array
    assert (stored[overlay] == 255).all()  # MONOCHROME1: the highest value is black
    shown = read_grayscale(tmp_path / "out.dcm")  # inverted to bright = echo
    assert not shown[overlay].any() and (shown[fan] == frame[fan]).mean() >= 0.99
    assert PHI["PatientName"].encode() not in (tmp_path / "out.dcm").read_bytes()


# ----------------------------------------------------------------------------- raster files


def test_png_and_jpeg_metadata_not_copied(tmp_path):
    from PIL import Image, PngImagePlugin

    frame = synthetic_fan_frame()[0]
    source = tmp_path / "in"
    source.mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "PatientName=ZZDOE^JANEPHI")
    Image.fromarray(frame).save(source / "frame.png", pnginfo=info)
    exif = Image.Exif()
    exif[0x010E] = "ZZDOE^JANEPHI"  # ImageDescription
    Image.fromarray(frame).save(source / "frame.jpg", quality=95, exif=exif,
                                comment=b"ZZDOE^JANEPHI")
    for name in ("frame.png", "frame.jpg"):
        assert b"ZZDOE^JANEPHI" in (source / name).read_bytes()  # the test can fail
    report = deid.deidentify_folder(source, tmp_path / "out", progress_every=0)
    assert sorted(report["format"]) == ["jpeg", "png"]
    for name in ("frame.png", "frame.jpg"):
        data = (tmp_path / "out" / name).read_bytes()
        assert b"ZZDOE^JANEPHI" not in data
        assert read_grayscale(tmp_path / "out" / name).shape == frame.shape
    assert (tmp_path / "out" / "frame.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "out" / "frame.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_colour_png_keeps_channels(tmp_path):
    frame = synthetic_fan_frame()[0]
    colour = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    colour[0:5, 0:5] = (0, 0, 255)
    cv2.imwrite(str(tmp_path / "c.png"), colour)
    row = deid.deidentify_file(tmp_path / "c.png", tmp_path / "out.png")
    out = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == colour.shape and not out[0:5, 0:5].any()
    assert row["sector_kind"] == "fan" and 0 < row["fraction_blanked"] < 1


# ----------------------------------------------------------------------------- folders and CLI


def _small_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "sub").mkdir()
    frame = synthetic_fan_frame()[0]
    cv2.imwrite(str(root / "a.png"), frame)
    cv2.imwrite(str(root / "sub" / "b.png"), frame)
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_report_and_relative_paths(tmp_path):
    source = _small_folder(tmp_path / "in")
    messages: list[str] = []
    report = deid.deidentify_folder(source, tmp_path / "out", progress_every=1,
                                    progress=messages.append)
    assert list(report.columns) == list(deid.REPORT_COLUMNS)
    assert sorted(report["image_path"]) == ["a.png", "sub/b.png"]
    assert (tmp_path / "out" / "sub" / "b.png").is_file()
    assert not (tmp_path / "out" / "notes.txt").exists()
    assert len(messages) == 2 and "2/2" in messages[-1]
    on_disk = pd.read_csv(tmp_path / "out" / deid.REPORT_CSV)
    assert sorted(on_disk["image_path"]) == ["a.png", "sub/b.png"]
    document = json.loads((tmp_path / "out" / deid.REPORT_JSON).read_text())
    assert document["n_images"] == 2 and len(document["images"]) == 2
    assert str(source) not in (tmp_path / "out" / deid.REPORT_JSON).read_text()


@pytest.mark.parametrize("out_name", ["in/out", "in", "."])
def test_folder_refuses_output_inside_or_around_input(tmp_path, out_name):
    source = _small_folder(tmp_path / "in")
    with pytest.raises(InputError, match="outside the input folder"):
        deid.deidentify_folder(source, tmp_path / out_name, progress_every=0)


def test_folder_refuses_non_empty_output_unless_force(tmp_path):
    source = _small_folder(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(InputError, match="--force"):
        deid.deidentify_folder(source, out, progress_every=0)
    assert (out / "old.txt").exists()
    deid.deidentify_folder(source, out, force=True, progress_every=0)
    assert not (out / "old.txt").exists() and (out / "a.png").exists()


def test_bad_image_names_it_and_writes_nothing(tmp_path):
    source = _small_folder(tmp_path / "in")
    (source / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ImageReadError, match="broken.png"):
        deid.deidentify_folder(source, tmp_path / "out", progress_every=0)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging left


def test_manifest_mode_copies_manifest_and_masks(tmp_path):
    source = _small_folder(tmp_path / "in")
    mask = np.zeros((540, 800), np.uint8)
    mask[100:120, 300:340] = 255
    cv2.imwrite(str(source / "sub" / "b_mask.png"), mask)
    manifest = source / "manifest.csv"
    pd.DataFrame({"image_path": ["sub/b.png"], "case_id": ["c1"], "label": ["normal"],
                  "mask_path": ["sub/b_mask.png"]}).to_csv(manifest, index=False)
    report = deid.deidentify_folder(None, tmp_path / "out", manifest, progress_every=0,
                                    pseudonymise=False)
    assert list(report["image_path"]) == ["sub/b.png"]
    assert (tmp_path / "out" / "manifest.csv").read_bytes() == manifest.read_bytes()
    assert not deid.default_key_path(tmp_path / "out").exists()
    assert (tmp_path / "out" / "sub" / "b.png").is_file()
    assert ((tmp_path / "out" / "sub" / "b_mask.png").read_bytes()
            == (source / "sub" / "b_mask.png").read_bytes())
    assert not (tmp_path / "out" / "a.png").exists()


@pytest.mark.parametrize("rows, message, row", [
    (["a.png", "missing.png"], "not found", 2),
    (["a.png", "../escape.png"], "inside the manifest's folder", 2),
    (["a.png", ""], "missing image_path", 2),
])
def test_manifest_errors_name_row_and_column(tmp_path, rows, message, row):
    source = _small_folder(tmp_path / "in")
    cv2.imwrite(str(tmp_path / "escape.png"), synthetic_fan_frame()[0])
    manifest = source / "manifest.csv"
    pd.DataFrame({"image_path": rows, "case_id": [f"c{i}" for i in range(len(rows))],
                  "label": ["normal"] * len(rows)}).to_csv(manifest, index=False)
    with pytest.raises(InputError, match=message) as caught:
        deid.deidentify_folder(None, tmp_path / "out", manifest, progress_every=0)
    assert caught.value.row == row and caught.value.column == "image_path"
    assert not (tmp_path / "out").exists()


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    deid.add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_runs_and_reports(tmp_path, capsys):
    source = _small_folder(tmp_path / "in")
    manifest = source / "m.csv"
    pd.DataFrame({"image_path": ["a.png"], "case_id": ["c1"], "label": ["normal"]}).to_csv(
        manifest, index=False)
    assert _cli(["deidentify", "--images", str(source), "--out", str(tmp_path / "o"),
                 "--manifest", str(manifest)]) == 0
    assert (tmp_path / "o" / "m.csv").exists() and (tmp_path / "o" / "a.png").exists()
    assert "deidentified 1 images" in capsys.readouterr().err
    with pytest.raises(InputError):
        _cli(["deidentify", "--out", str(tmp_path / "o2")])


def test_compressed_dicom_is_decoded_and_written_uncompressed(tmp_path):
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless

    frame, fan, overlay = synthetic_fan_frame()
    frame, fan, overlay = frame[::2, ::2], fan[::2, ::2], overlay[::2, ::2]
    write_dicom_grayscale(tmp_path / "raw.dcm", frame, extra_tags={"PatientID": PHI["PatientID"]})
    ds = pydicom.dcmread(tmp_path / "raw.dcm")
    ds.compress(RLELossless, generate_instance_uid=False)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    row = deid.deidentify_file(tmp_path / "rle.dcm", tmp_path / "out.dcm")
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not out.pixel_array[overlay].any()
    assert (out.pixel_array[fan] == frame[fan]).mean() >= 0.99
    assert row["sector_kind"] == "fan" and "PatientID" in row["dicom_emptied"]
    assert PHI["PatientID"].encode() not in (tmp_path / "out.dcm").read_bytes()


# ----------------------------------------------------------------------------- manifest: pseudonyms

PATIENT_IDS = ("PID7731904", "PID7731905")
HOSPITAL = "ST MARYS HOSPITAL LEEDS"


def _phi_manifest(root: Path, ids=PATIENT_IDS) -> Path:
    source = root if root.exists() else _small_folder(root)
    manifest = source / "manifest.csv"
    pd.DataFrame({"image_path": ["a.png", "sub/b.png"][:len(ids)], "case_id": list(ids),
                  "label": ["normal"] * len(ids), "center": [HOSPITAL] * len(ids),
                  "patient_name": ["ZZDOE^JANEPHI"] * len(ids)}).to_csv(manifest, index=False)
    return manifest


def _out_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_manifest_ids_pseudonymised_key_beside_and_columns_dropped(tmp_path):
    manifest = _phi_manifest(tmp_path / "in")
    assert PATIENT_IDS[0].encode() in manifest.read_bytes()  # the test can fail
    out = tmp_path / "out"
    deid.deidentify_folder(None, out, manifest, progress_every=0)
    data = _out_bytes(out)
    for needle in (*PATIENT_IDS, HOSPITAL, "ZZDOE^JANEPHI", str(tmp_path), "/work/", "/tmp/"):
        assert needle.encode() not in data, needle
    written = pd.read_csv(out / "manifest.csv", dtype=str)
    assert list(written.columns) == ["image_path", "case_id", "label", "center"]
    assert written["case_id"].str.fullmatch(r"case-[0-9a-f]{8}").all()
    assert written["case_id"].nunique() == 2 and written["center"].nunique() == 1
    key_path = deid.default_key_path(out)
    assert key_path.parent == out.parent and key_path.name == "out_pseudonym_key.csv"
    key = pd.read_csv(key_path, dtype=str)
    assert set(zip(key["column"], key["original"])) == {
        ("case_id", PATIENT_IDS[0]), ("case_id", PATIENT_IDS[1]), ("center", HOSPITAL)}
    mapping = dict(zip(key["original"], key["pseudonym"]))
    assert list(written["case_id"]) == [mapping[i] for i in PATIENT_IDS]
    summary = json.loads((out / deid.REPORT_JSON).read_text())["manifest"]
    assert summary["columns_dropped"] == ["patient_name"]
    assert summary["columns_pseudonymised"] == ["case_id", "center"]
    assert (summary["pseudonyms_new"], summary["pseudonyms_reused"]) == (3, 0)
    assert summary["key_file"] == key_path.name


def test_rerun_with_the_same_key_keeps_the_pseudonyms(tmp_path):
    manifest = _phi_manifest(tmp_path / "in", ids=PATIENT_IDS[:1])
    key_path = tmp_path / "keys" / "study_key.csv"
    key_path.parent.mkdir()
    deid.deidentify_folder(None, tmp_path / "out1", manifest, progress_every=0, key_file=key_path)
    first = pd.read_csv(tmp_path / "out1" / "manifest.csv", dtype=str)
    _phi_manifest(tmp_path / "in", ids=PATIENT_IDS)  # one more patient
    deid.deidentify_folder(None, tmp_path / "out2", manifest, progress_every=0, key_file=key_path)
    second = pd.read_csv(tmp_path / "out2" / "manifest.csv", dtype=str)
    assert second["case_id"][0] == first["case_id"][0] and second["case_id"][1] != first["case_id"][0]
    assert second["center"][0] == first["center"][0]
    summary = json.loads((tmp_path / "out2" / deid.REPORT_JSON).read_text())["manifest"]
    assert (summary["pseudonyms_new"], summary["pseudonyms_reused"]) == (1, 2)
    assert len(pd.read_csv(key_path)) == 3


@pytest.mark.parametrize("kwargs, file_name, column, row", [
    ({"unknown_columns": "refuse"}, "manifest.csv", "patient_name", None),
    ({"key_file": "out/key.csv"}, "key.csv", None, None),
    ({"key_file": "bad_key.csv"}, "bad_key.csv", "pseudonym", None),
    ({"key_file": "repeated_key.csv"}, "repeated_key.csv", "pseudonym", 2),
])
def test_manifest_refusals_name_file_row_column_and_write_nothing(tmp_path, kwargs, file_name,
                                                                   column, row):
    manifest = _phi_manifest(tmp_path / "in")
    (tmp_path / "bad_key.csv").write_text("column,original\ncase_id,x\n")
    (tmp_path / "repeated_key.csv").write_text(
        "column,original,pseudonym\ncase_id,a,case-1\ncase_id,b,case-1\n")
    if "key_file" in kwargs:
        kwargs = dict(kwargs, key_file=tmp_path / kwargs["key_file"])
    with pytest.raises(InputError) as caught:
        deid.deidentify_folder(None, tmp_path / "out", manifest, progress_every=0, **kwargs)
    assert Path(caught.value.file).name == file_name
    assert (caught.value.column, caught.value.row) == (column, row)
    assert not (tmp_path / "out").exists() and not deid.default_key_path(tmp_path / "out").exists()


def test_cli_refused_column_is_one_line_and_exit_2(tmp_path, capsys):
    from data_prep.__main__ import main

    manifest = _phi_manifest(tmp_path / "in")
    code = main(["deidentify", "--manifest", str(manifest), "--out", str(tmp_path / "out"),
                 "--unknown-columns", "refuse"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "column 'patient_name'" in err
    assert main(["deidentify", "--manifest", str(manifest), "--out", str(tmp_path / "out"),
                 "--retain-dates", "--progress-every", "0"]) == 0
    err = capsys.readouterr().err
    assert "pseudonymised case_id, center (3 new" in err and "dropped columns: patient_name" in err
