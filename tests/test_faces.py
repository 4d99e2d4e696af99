"""Face detection (MTCNN), five-point alignment to the ArcFace template, and the faces CLI, on
public photos that scikit-image ships (astronaut, camera, the LFW subset)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep import faces
from data_prep.__main__ import main as data_prep_main

skimage_data = pytest.importorskip("skimage.data")
REPO = Path(__file__).resolve().parent.parent
LEFT_EYE, RIGHT_EYE, NOSE, MOUTH_LEFT, MOUTH_RIGHT = range(5)


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return _rgb(skimage_data.camera())


def test_importing_faces_does_not_import_tensorflow():
    code = ("import sys, data_prep.faces, data_prep.__main__ as m; m.build_parser(); "
            "assert not [k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'mtcnn', "
            "'skimage')], 'heavy import'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_one_face_with_eyes_above_nose_above_mouth(name, request):
    report = faces.detect_face(request.getfixturevalue(name))
    assert report.status == "ok" and report.n_faces == 1, report.reason
    points = report.points
    assert points[LEFT_EYE, 0] < points[RIGHT_EYE, 0]           # image-left eye first
    assert points[MOUTH_LEFT, 0] < points[MOUTH_RIGHT, 0]
    assert max(points[LEFT_EYE, 1], points[RIGHT_EYE, 1]) < points[NOSE, 1] \
        < min(points[MOUTH_LEFT, 1], points[MOUTH_RIGHT, 1])
    assert report.face.confidence > 0.99 and report.face.size >= faces.MIN_FACE_PX


@pytest.mark.parametrize("name, eye_tolerance", [("astronaut", 3.0), ("camera", 10.0)])
def test_alignment_puts_the_eyes_on_the_template(name, eye_tolerance, request):
    """astronaut is frontal: each eye within 3 px of its template place at 112. camera's head is
    turned: the least-squares fit spreads the error over five points, the eyes' midpoint still
    lands within 3 px."""
    image = request.getfixturevalue(name)
    points = faces.detect_face(image).points
    template = faces.TEMPLATES[112]
    moved = faces.aligned_points(points, 112)
    eyes_error = np.hypot(*(moved[:2] - template[:2]).T)
    assert eyes_error.max() < eye_tolerance, eyes_error
    assert np.hypot(*(moved[:2].mean(0) - template[:2].mean(0))) < 3.0
    np.testing.assert_allclose(faces.aligned_points(points, 224), 2 * moved, atol=1e-6)
    for size in (112, 224):
        crop = faces.align_face(image, points, size)
        assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    # The crop really is the face: re-detected in it, the eyes are where the template says.
    again = faces.detect_face(faces.align_face(image, points, 224), min_face=40)
    assert again.status == "ok", again.reason
    assert np.hypot(*(again.points[:2] - faces.TEMPLATES[224][:2]).T).max() < 3 * eye_tolerance


def test_similarity_transform_is_recovered_and_the_warp_goes_the_right_way():
    """Warp the template's points (and dots drawn on them) with a known similarity; fitting
    the five points back recovers it, and align_face puts the dots back on the template."""
    from skimage.transform import SimilarityTransform

    known = SimilarityTransform(scale=2.6, rotation=np.deg2rad(17.0), translation=(140.0, 35.0))
    template = faces.TEMPLATES[112]
    photo_points = known(template)
    fitted = faces.similarity_from_points(photo_points, template)
    np.testing.assert_allclose(fitted.params, np.linalg.inv(known.params), atol=1e-9)
    np.testing.assert_allclose(faces.aligned_points(photo_points, 112), template, atol=1e-9)

    dots = np.zeros((112, 112), np.uint8)
    for x, y in template:
        cv2.circle(dots, (round(x * 16), round(y * 16)), 3 * 16, 255, -1, shift=4)
    photo = cv2.warpAffine(dots, known.params[:2], (480, 400), flags=cv2.INTER_LINEAR)
    back = faces.align_face(photo, photo_points.reshape(-1), 112)
    for x, y in template:
        patch = back[int(y) - 6:int(y) + 7, int(x) - 6:int(x) + 7].astype(float)
        rows, cols = np.mgrid[int(y) - 6:int(y) + 7, int(x) - 6:int(x) + 7]
        centre = np.array([(cols * patch).sum(), (rows * patch).sum()]) / patch.sum()
        assert np.hypot(*(centre - (x, y))) < 0.5, (centre, (x, y))


def test_degenerate_points_are_refused():
    with pytest.raises(ValueError):
        faces.align_face(np.zeros((50, 50, 3), np.uint8), np.zeros(10), 112)
    with pytest.raises(ValueError):
        faces.align_face(np.zeros((50, 50, 3), np.uint8), np.arange(10.0), 100)


def test_two_photos_side_by_side_are_several_faces(astronaut, camera):
    report = faces.detect_face(np.hstack([astronaut, camera]))
    assert report.status == "several_faces" and report.n_faces == 2, report.reason
    assert "2 faces" in report.reason and "not guessed" in report.reason
    assert not report.aligned


@pytest.mark.parametrize("image", [np.full((200, 240, 3), 128, np.uint8),
                                   np.zeros((8, 8, 3), np.uint8)], ids=["grey", "8x8"])
def test_a_blank_photo_is_no_face(image):
    report = faces.detect_face(image)
    assert report.status == "no_face" and report.face is None and report.points is None
    assert "no face" in report.reason


def test_a_tiny_face_is_face_too_small_and_the_flag_lowers_the_minimum(astronaut):
    small = cv2.resize(astronaut, (200, 200), interpolation=cv2.INTER_AREA)
    report = faces.detect_face(small)
    assert report.status == "face_too_small", report.reason
    assert report.face.size < faces.MIN_FACE_PX and "--min-face" in report.reason
    assert faces.detect_face(small, min_face=20).status == "ok"
    assert faces.detect_face(astronaut, min_face=200).status == "face_too_small"


def test_a_large_photo_is_detected_on_a_downscaled_copy_in_its_own_pixels(astronaut):
    """2048 px > DETECT_LONG_SIDE: detected at 1280 px, reported in the photo's pixels. At this
    scale MTCNN also scores a patch of the spacesuit 0.90: counted in the reason, not a face."""
    reference = faces.detect_face(astronaut)
    report = faces.detect_face(cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC))
    assert report.status == "ok" and report.n_candidates == 2, report.reason
    assert "1 other candidate ignored" in report.reason
    np.testing.assert_allclose(report.points, reference.points * 4, atol=8)


def test_detection_is_deterministic(camera):
    first, second = faces.detect_faces(camera), faces.detect_faces(camera)
    assert [f.box for f in first] == [f.box for f in second]
    assert all(np.array_equal(a.points, b.points) for a, b in zip(first, second))


def test_a_stray_weights_file_in_the_working_folder_is_not_loaded(camera, tmp_path, monkeypatch):
    """mtcnn's own loader reads ./pnet.lz4 before its packaged file; ours must not."""
    import joblib
    from mtcnn.utils.tensorflow import load_weights

    reference = faces.detect_faces(camera)
    packaged = load_weights("pnet.lz4")
    monkeypatch.chdir(tmp_path)
    joblib.dump([np.zeros_like(w) for w in packaged], tmp_path / "pnet.lz4")
    assert not any(np.any(w) for w in load_weights("pnet.lz4"))   # the trap is armed
    faces._detector.cache_clear()
    try:
        again = faces.detect_faces(camera)
    finally:
        faces._detector.cache_clear()
    assert [f.box for f in again] == [f.box for f in reference] and len(again) == 1


def _lfw_photo(crop: np.ndarray, side: int = 120, border: int = 40) -> np.ndarray:
    """A 25x25 LFW crop upscaled to `side` px, with an edge-replicated border around it."""
    gray = np.round(crop * 255).astype(np.uint8)
    gray = cv2.resize(gray, (side, side), interpolation=cv2.INTER_CUBIC)
    return _rgb(cv2.copyMakeBorder(gray, border, border, border, border, cv2.BORDER_REPLICATE))


def _lfw_rates(step: int) -> tuple[float, float]:
    subset = skimage_data.lfw_subset()      # 100 faces, then 100 non-faces
    found = [faces.detect_face(_lfw_photo(crop)).status == "ok" for crop in subset[::step]]
    half = len(found) // 2
    return float(np.mean(found[:half])), float(np.mean(found[half:]))


def test_lfw_subset_sample_faces_found_and_non_faces_not():
    """Every 4th of the 100 LFW faces and of the 100 non-faces (the whole set: slow test)."""
    face_rate, non_face_rate = _lfw_rates(step=4)
    assert face_rate >= 0.9 and non_face_rate == 0.0, (face_rate, non_face_rate)


@pytest.mark.slow
def test_lfw_subset_all_faces_found_and_no_non_face():
    face_rate, non_face_rate = _lfw_rates(step=1)
    assert face_rate >= 0.9 and non_face_rate == 0.0, (face_rate, non_face_rate)


def test_eye_bar_covers_both_eyes_and_nothing_below(astronaut):
    points = faces.detect_face(astronaut).points
    before = astronaut.copy()
    barred = faces.eye_bar(astronaut, points)
    np.testing.assert_array_equal(astronaut, before)     # the input is not changed
    for x, y in points[:2]:
        assert barred[int(round(y)), int(round(x))].max() == 0
    for x, y in points[2:]:
        np.testing.assert_array_equal(barred[int(round(y)), int(round(x))],
                                      astronaut[int(round(y)), int(round(x))])
    changed = np.any(barred != astronaut, axis=2)
    assert 0.002 < changed.mean() < 0.05


# --------------------------------------------------------------------------- the CLI

@pytest.fixture()
def photo_folder(tmp_path, astronaut) -> Path:
    """astronaut (detected), a grey frame (no face) and a grey frame with manifest landmarks."""
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "astronaut.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "grey.png"), np.full((200, 240, 3), 128, np.uint8))
    cv2.imwrite(str(folder / "grey_marked.png"), np.full((200, 240, 3), 90, np.uint8))
    given = "80 90 140 90 110 120 85 150 135 150"
    pd.DataFrame({"image_path": ["astronaut.png", "grey.png", "grey_marked.png"],
                  "case_id": ["c1", "c2", "c3"], "label": ["healthy", "healthy", "syndrome"],
                  "landmarks": ["", "", given], "age_months": ["30", "", "12"],
                  "clinic_note": ["x", "y", "z"]}).to_csv(folder / "manifest.csv", index=False)
    return folder


def test_faces_cli_reports_every_photo_and_aligns_those_with_a_face(photo_folder, tmp_path,
                                                                    capsys):
    out = tmp_path / "out"
    code = data_prep_main(["faces", "--manifest", str(photo_folder / "manifest.csv"), "--out",
                           str(out), "--size", "224", "--progress-every", "1"])
    err = capsys.readouterr().err
    assert code == 1, err    # row 2 has no face: a finding, not an error
    assert "faces: 3/3 photos" in err and "rows 2" in err
    detections = pd.read_csv(out / "detections.csv", dtype=str, keep_default_na=False)
    assert list(detections.columns) == list(faces.DETECTION_COLUMNS)
    assert list(detections["row"]) == ["1", "2", "3"]
    assert list(detections["status"]) == ["ok", "no_face", "landmarks_given"]
    assert list(detections["aligned_path"]) == ["faces/000001.png", "", "faces/000003.png"]
    assert detections["confidence"][1] == "" and detections["landmarks"][1] == ""
    assert float(detections["confidence"][0]) > 0.99
    assert detections["landmarks"][2] == "80.00 90.00 140.00 90.00 110.00 120.00 85.00 " \
                                         "150.00 135.00 150.00"
    assert not (out / "faces" / "000002.png").exists()
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(manifest.columns) == ["image_path", "case_id", "label", "age_months", "landmarks"]
    assert list(manifest["case_id"]) == ["c1", "c3"]
    aligned = np.array([float(v) for v in manifest["landmarks"][0].split()]).reshape(5, 2)
    assert np.hypot(*(aligned[:2] - faces.TEMPLATES[224][:2]).T).max() < 6
    crop = cv2.imread(str(out / "faces" / "000003.png"))
    assert crop.shape == (224, 224, 3) and crop[112, 112].tolist() == [90, 90, 90]
    report = (out / "faces_report.json").read_text()
    assert '"no_face": 1' in report and "clinic_note" in report


def test_faces_cli_refuses_bad_input_in_one_line(photo_folder, tmp_path, capsys):
    manifest = photo_folder / "manifest.csv"
    text = manifest.read_text().replace("80 90 140 90", "80 90 999 90")
    manifest.write_text(text)
    out = tmp_path / "out"
    assert data_prep_main(["faces", "--manifest", str(manifest), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "row 3" in err and "column 'landmarks'" in err and "right_eye outside" in err
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:
        data_prep_main(["faces", "--manifest", str(manifest), "--out", str(out), "--size", "100"])
    assert exit_info.value.code == 2


def test_faces_landmarks_fallback_and_masks_warped_with_their_photo(photo_folder, tmp_path, capsys):
    """--landmarks fallback: the astronaut is still detected; the grey frame with landmarks
    falls back to them (status landmarks_fallback, the detector's reason kept); the frame
    with neither has no face. Truth masks move with their photo (nearest neighbour)."""
    frame = pd.read_csv(photo_folder / "manifest.csv", dtype=str, keep_default_na=False)
    mask = np.zeros((200, 240), np.uint8)
    cv2.rectangle(mask, (75, 85), (85, 95), 255, -1)   # around the given left eye (80, 90)
    cv2.imwrite(str(photo_folder / "mask3.png"), mask)
    frame["mask_path"] = ["", "", "mask3.png"]
    frame.to_csv(photo_folder / "manifest.csv", index=False)
    out = tmp_path / "out"
    code = data_prep_main(["faces", "--manifest", str(photo_folder / "manifest.csv"), "--out",
                           str(out), "--size", "112", "--landmarks", "fallback"])
    assert code == 1, capsys.readouterr().err
    detections = pd.read_csv(out / "detections.csv", dtype=str, keep_default_na=False)
    assert list(detections["status"]) == ["ok", "no_face", "landmarks_fallback"]
    assert "no face with confidence" in detections["reason"][2]
    assert "manifest's landmarks used instead" in detections["reason"][2]
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(manifest["mask_path"]) == ["", "masks/000003.png"]
    warped = cv2.imread(str(out / "masks" / "000003.png"), cv2.IMREAD_GRAYSCALE)
    assert warped.shape == (112, 112) and set(np.unique(warped)) <= {0, 255}
    ys, xs = np.nonzero(warped)
    left_eye = faces.TEMPLATES[112][0]
    assert abs(xs.mean() - left_eye[0]) < 2 and abs(ys.mean() - left_eye[1]) < 2
    assert json.loads((out / "faces_report.json").read_text())["landmarks_mode"] == "fallback"
