"""A burned-in banner ("DOE JANE PID ...") touching the top of the fan (issue 17).

The fan's convex hull takes in the notch above the fan's near arc, and bold text joined to the
fan pulled the hull over itself: the banner survived, the part outside the fan included, and
BurnedInAnnotation was set to NO. Now text outside the fan is never kept, and text that reaches
into the fan is blanked with the frame reported "burned-in text may remain" (BurnedInAnnotation
left YES).
"""
from __future__ import annotations

import cv2
import numpy as np
import pydicom
import pytest

from data_prep import deidentify as deid
from data_prep.io import write_dicom_grayscale
from tests.test_deidentify import synthetic_fan_frame

PHI = "DOE JANE PID 12345678"


def _fan() -> tuple[np.ndarray, np.ndarray]:
    frame, fan, _ = synthetic_fan_frame(0)
    return frame, fan.astype(bool)


def _fan_top(fan: np.ndarray) -> int:
    return int(np.nonzero(fan)[0].min())


def _bright_text(frame, fan, scale, thickness, dy):
    """White text whose glyphs reach `dy` px below the fan's top into the fan."""
    text = np.zeros_like(frame)
    cv2.putText(text, PHI, (250, _fan_top(fan) + dy), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                thickness)
    return np.maximum(frame, text), text > 0


def _grey_banner(frame, fan, scale, thickness, dy):
    """A grey strip with dark text whose lower edge reaches `dy` px into the fan."""
    out = frame.copy()
    strip = np.zeros_like(frame)
    top = _fan_top(fan)
    cv2.rectangle(strip, (230, top - 28), (570, top + dy), 1, -1)
    out[strip > 0] = 150
    text = np.zeros_like(frame)
    cv2.putText(text, PHI, (240, top - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness)
    out[text > 0] = 20
    return out, strip > 0


# builder, font scale, thickness, how far the banner reaches into the fan (px)
CASES = [
    (_bright_text, 0.8, 2, 6),
    (_bright_text, 0.6, 1, 4),
    (_bright_text, 1.0, 3, 10),
    (_grey_banner, 0.8, 2, 8),
    (_grey_banner, 0.6, 1, 3),
]
IDS = [f"{b.__name__[1:]}-{s}-{t}-{d}" for b, s, t, d in CASES]


@pytest.mark.parametrize("builder,scale,thickness,dy", CASES, ids=IDS)
def test_banner_touching_the_fan_is_blanked_or_reported(builder, scale, thickness, dy):
    frame, fan = _fan()
    image, banner = builder(frame, fan, scale, thickness, dy)
    outside, inside = banner & ~fan, banner & fan
    assert outside.sum() > 200 and inside.sum() > 0  # it does touch the fan
    sector = deid.find_scan_sector(image)
    assert not (sector.mask & outside).any()         # text outside the fan: never kept
    assert sector.text_may_remain or not (sector.mask & inside).any()
    assert (sector.mask & fan).sum() >= 0.99 * fan.sum()


def test_text_away_from_the_fan_is_not_reported():
    """The synthetic frame's own text, bar and ECG lie outside the fan: blanked as before,
    and no "burned-in text may remain"."""
    frame, fan = _fan()
    sector = deid.find_scan_sector(frame)
    assert not sector.text_may_remain
    assert (sector.mask & fan).sum() >= 0.99 * fan.sum()


@pytest.mark.parametrize("touching", [True, False], ids=["banner", "no-banner"])
def test_dicom_burned_in_annotation_and_report(tmp_path, touching):
    frame, fan = _fan()
    image = _bright_text(frame, fan, 0.8, 2, 6)[0] if touching else frame
    src = write_dicom_grayscale(tmp_path / "in.dcm", image[None])
    row = deid.deidentify_file(src, tmp_path / "out.dcm")
    ds = pydicom.dcmread(tmp_path / "out.dcm")
    assert ds.BurnedInAnnotation == ("YES" if touching else "NO")
    assert row["pixel_warning"] == (deid.TEXT_MAY_REMAIN if touching else "")
    out = ds.pixel_array
    assert not out[~fan & (image != frame)].any()    # the banner's outside part is black


def test_folder_run_names_the_frames_where_text_may_remain(tmp_path):
    frame, fan = _fan()
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "banner.png"), _bright_text(frame, fan, 0.8, 2, 6)[0])
    cv2.imwrite(str(tmp_path / "in" / "clean.png"), frame)
    said = []
    report = deid.deidentify_folder(tmp_path / "in", tmp_path / "out", progress=said.append)
    flagged = report.set_index("image_path")["pixel_warning"].fillna("")
    assert flagged.to_dict() == {"banner.png": deid.TEXT_MAY_REMAIN, "clean.png": ""}
    assert any(deid.TEXT_MAY_REMAIN in line and "banner.png" in line for line in said)
