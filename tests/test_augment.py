"""Augmentation: shape/dtype kept, determinism, per-class multiplicity on the training split
only, masks moved with their images, and the Figure S2 panel on a real frame."""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep import augment as ag
from data_prep.errors import InputError

H, W = 400, 440  # Pgds input (W, H) = (440, 400)


def textured(shape=(H, W), seed: int = 0) -> np.ndarray:
    """A smooth random texture on a black background: something every warp visibly moves."""
    rng = np.random.default_rng(seed)
    small = rng.random((shape[0] // 16, shape[1] // 16)).astype(np.float32)
    image = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def square_image(shape=(H, W), top_left=(150, 170), size=80) -> tuple[np.ndarray, np.ndarray]:
    """A bright square on a dark frame, and its 0/255 mask."""
    image = np.full(shape, 20, np.uint8)
    mask = np.zeros(shape, np.uint8)
    y, x = top_left
    image[y:y + size, x:x + size] = 230
    mask[y:y + size, x:x + size] = 255
    return image, mask


def as_dtype(image: np.ndarray, kind: str) -> np.ndarray:
    return {"uint8": image, "uint16": image.astype(np.uint16) * 257,
            "float32": image.astype(np.float32) / 255.0, "uint8_hw1": image[:, :, None],
            "float32_hw1": (image.astype(np.float32) / 255.0)[:, :, None], "bool": image > 128}[kind]


@pytest.mark.parametrize("method", ag.METHODS)
@pytest.mark.parametrize("kind", ["uint8", "uint16", "float32", "uint8_hw1", "float32_hw1", "bool"])
def test_every_method_keeps_shape_and_dtype(method, kind):
    image = as_dtype(textured(), kind)
    out = ag.AUGMENTATIONS[method](image, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == image.dtype
    assert not np.array_equal(out, image)  # it did something
    if kind.startswith("float32"):
        assert 0.0 <= out.min() and out.max() <= 1.0 + 1e-6  # bilinear: no overshoot


def test_augmentations_registry_has_the_papers_six_methods():
    assert list(ag.AUGMENTATIONS) == ["distortion", "zoom_in", "tilt", "zoom_out", "crop", "combination"]


@pytest.mark.parametrize("method", ag.METHODS)
def test_deterministic_by_seed_and_different_across_seeds(method):
    image = textured()
    a = ag.augment_image(image, method, np.random.default_rng(5))
    b = ag.augment_image(image, method, np.random.default_rng(5))
    c = ag.augment_image(image, method, np.random.default_rng(6))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_augment_is_deterministic_and_uses_every_method():
    image = textured()
    assert np.array_equal(ag.random_augment(image, np.random.default_rng(1)),
                          ag.random_augment(image, np.random.default_rng(1)))
    drawn = {ag.METHODS[int(np.random.default_rng(s).integers(len(ag.METHODS)))] for s in range(60)}
    assert drawn == set(ag.METHODS)


@pytest.mark.parametrize("method, border_black, fills_frame", [
    ("zoom_in", False, True), ("crop", False, True), ("zoom_out", True, False), ("tilt", True, False)])
def test_padding_is_black_only_where_the_frame_shrinks(method, border_black, fills_frame):
    white = np.full((H, W), 255, np.uint8)
    for seed in range(10):
        out = ag.augment_image(white, method, np.random.default_rng(seed))
        if fills_frame:
            assert out.min() == 255
        if border_black:
            assert (out == 0).any() and out[H // 2, W // 2] == 255


@pytest.mark.parametrize("method", ag.METHODS)
def test_a_central_face_stays_inside_the_frame(method):
    """A disk of radius 0.2 * height at the centre never reaches the border."""
    disk = np.zeros((H, W), np.uint8)
    cv2.circle(disk, (W // 2, H // 2), int(0.2 * H), 255, -1)
    for seed in range(25):
        out = ag.augment_image(disk, method, np.random.default_rng(seed))
        border = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])
        assert border.max() < 128, seed
        assert (out > 128).sum() > 0.5 * (disk > 128).sum()


def test_combination_uses_two_or_three_distinct_methods():
    parts = [ag.sample_transform("combination", (H, W), np.random.default_rng(s)).parts for s in range(40)]
    assert {len(p) for p in parts} == {2, 3}
    assert all(len(set(p)) == len(p) and set(p) <= set(ag.BASE_METHODS) for p in parts)


def test_combination_equals_its_steps_applied_in_turn():
    """One composed remap == warping step by step (up to interpolation)."""
    image = textured().astype(np.float32)
    transform = ag.sample_transform("combination", image.shape, np.random.default_rng(3))
    stepwise = image
    for step in transform.steps:
        stepwise = ag.apply_transform(stepwise, ag.Transform(step.method, (step,)))
    composed = ag.apply_transform(image, transform)
    inner = (slice(60, -60), slice(60, -60))  # away from borders zeroed by intermediate steps
    assert np.abs(composed[inner] - stepwise[inner]).mean() < 3.0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("method", ag.METHODS)
def test_mask_moves_with_the_image(method):
    image, mask = square_image(top_left=(70, 90))  # off-centre, where distortion moves things too
    for seed in range(5):
        out_image, out_mask = ag.augment_with_mask(image, mask, method, np.random.default_rng(seed))
        assert set(np.unique(out_mask)) <= {0, 255}  # nearest-neighbour keeps labels
        assert iou(out_mask > 127, out_image > 125) > 0.9
        assert iou(out_mask > 127, mask > 127) < 0.95  # and it did move


# ----------------------------------------------------------------------------- offline augmentation


def toy_dataset(root: Path, *, with_masks: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """3 normal + 2 disease training images, 1 val and 2 test images (PNG, 80x88)."""
    entries = [("n0", "normal", "train"), ("n1", "normal", "train"), ("n2", "normal", "train"),
               ("d0", "genetic_disease", "train"), ("d1", "genetic_disease", "train"),
               ("v0", "normal", "val"), ("t0", "normal", "test"), ("t1", "genetic_disease", "test")]
    rows = []
    for index, (name, label, split) in enumerate(entries):
        image, mask = square_image((80, 88), top_left=(20 + index, 25), size=30)
        (root / "data" / "img").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "data" / "img" / f"{name}.png"), image)
        row = {"image_path": f"img/{name}.png", "case_id": f"case_{name}", "label": label,
               "split": split}
        if with_masks:
            cv2.imwrite(str(root / "data" / "img" / f"{name}_mask.png"), mask)
            row["mask_path"] = f"img/{name}_mask.png"
        rows.append(row)
    frame = pd.DataFrame(rows)
    manifest = frame.drop(columns="split")
    manifest["abs_path"] = [str(root / "data" / p) for p in manifest["image_path"]]
    manifest.attrs["path"] = str(root / "data" / "manifest.csv")
    return manifest, frame[["image_path", "case_id", "split"]]


def test_multiplicity_counts_and_test_images_untouched(tmp_path):
    manifest, splits = toy_dataset(tmp_path)
    result = ag.augment_training_split(manifest, splits, tmp_path / "aug", seed=0, progress=False)
    train = result[result["split"] == "train"]
    assert len(train) == 3 * 2 + 2 * 6
    assert train.groupby("label").size().to_dict() == {"normal": 6, "genetic_disease": 12}
    copies = train[train["augmentation"] != ""]
    assert len(copies) == 3 * 1 + 2 * 5
    originals = result[result["augmentation"] == ""].set_index("image_path")
    assert set(copies["augmented_from"]) <= set(originals.index)  # links rows of this manifest
    assert (copies["augmented_from"].map(originals["case_id"]) == copies["case_id"]).all()
    assert (copies["augmented_from"].map(originals["split"]) == "train").all()
    for original, group in copies.groupby("augmented_from"):
        assert group["augmentation"].is_unique  # distinct methods per original
    held_out = result[result["split"] != "train"]
    assert sorted(held_out["case_id"]) == ["case_t0", "case_t1", "case_v0"]
    assert (held_out["augmentation"] == "").all() and (held_out["augmented_from"] == "").all()
    out = tmp_path / "aug"
    for row in result.itertuples():
        pixels = cv2.imread(str(out / row.image_path), cv2.IMREAD_GRAYSCALE)
        assert pixels is not None and pixels.shape == (80, 88)
    written = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert len(written) == len(result) and {"augmented_from", "augmentation"} <= set(written.columns)
    assert "split" not in written.columns and "abs_path" not in written.columns
    written_splits = pd.read_csv(out / "splits.csv", dtype=str)
    assert written_splits.groupby("case_id")["split"].nunique().max() == 1
    assert (out / "run.json").is_file()
    assert len(list((out / "images").rglob("*.png"))) == 13
    assert not list(tmp_path.glob(".aug.*"))  # no staging folder left behind


def test_offline_augmentation_is_deterministic_and_order_independent(tmp_path):
    manifest, splits = toy_dataset(tmp_path)
    a = ag.augment_training_split(manifest, splits, tmp_path / "a", seed=4, progress=False)
    reversed_manifest = manifest.iloc[::-1].reset_index(drop=True)
    reversed_manifest.attrs = manifest.attrs
    b = ag.augment_training_split(reversed_manifest, splits, tmp_path / "b", seed=4, progress=False)
    c = ag.augment_training_split(manifest, splits, tmp_path / "c", seed=5, progress=False)
    copies = a[a["augmentation"] != ""]
    assert set(copies["image_path"]) == set(b.loc[b["augmentation"] != "", "image_path"])
    same, differ = [], []
    for path in copies["image_path"]:
        pa = cv2.imread(str(tmp_path / "a" / path), cv2.IMREAD_UNCHANGED)
        same.append(np.array_equal(pa, cv2.imread(str(tmp_path / "b" / path), cv2.IMREAD_UNCHANGED)))
        other = tmp_path / "c" / path
        differ.append(not other.exists() or
                      not np.array_equal(pa, cv2.imread(str(other), cv2.IMREAD_UNCHANGED)))
    assert all(same) and all(differ)


def test_masks_follow_their_images_offline(tmp_path):
    manifest, splits = toy_dataset(tmp_path, with_masks=True)
    result = ag.augment_training_split(manifest, splits, tmp_path / "aug", seed=1, progress=False)
    copies = result[result["augmentation"] != ""]
    assert len(copies) == 13
    for row in copies.itertuples():
        image = cv2.imread(str(tmp_path / "aug" / row.image_path), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(tmp_path / "aug" / row.mask_path), cv2.IMREAD_GRAYSCALE)
        assert row.mask_path != row.image_path
        assert iou(mask > 127, image > 125) > 0.9, row.image_path
    originals = result[result["augmentation"] == ""]
    for row in originals.itertuples():  # originals still point at their own files
        assert (tmp_path / "aug" / row.mask_path).resolve() == \
            (tmp_path / "data" / row.mask_path.split("data/")[-1]).resolve()


@pytest.mark.parametrize("change, message", [
    ("label", "has no multiplicity"), ("missing_split", "not in the splits file"),
    ("exists", "already exists")])
def test_offline_augmentation_input_errors(tmp_path, change, message):
    manifest, splits = toy_dataset(tmp_path)
    out = tmp_path / "aug"
    if change == "label":
        manifest.loc[1, "label"] = "other"
    elif change == "missing_split":
        splits = splits.drop(index=2)
    else:
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match=message) as err:
        ag.augment_training_split(manifest, splits, out, progress=False)
    if change == "label":
        assert (err.value.row, err.value.column) == (2, "label")
    if change == "missing_split":
        assert (err.value.row, err.value.column) == (3, "image_path")
    if change == "exists":
        assert (out / "keep.txt").read_text() == "mine"
    else:
        assert not out.exists()
    assert not list(tmp_path.glob(".aug.*"))


def test_same_stem_different_suffix_do_not_collide(tmp_path):
    image, _ = square_image((60, 64), top_left=(10, 10), size=20)
    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), image)
    cv2.imwrite(str(tmp_path / "img" / "a.jpg"), image)
    manifest = pd.DataFrame({"image_path": ["img/a.png", "img/a.jpg"], "case_id": ["p", "q"],
                             "label": ["genetic_disease", "genetic_disease"]})
    splits = manifest[["image_path", "case_id"]].assign(split="train")
    result = ag.augment_training_split(manifest, splits, tmp_path / "aug", image_root=tmp_path,
                                       progress=False)
    copies = result[result["augmentation"] != ""]["image_path"]
    assert len(copies) == 10 and copies.is_unique
    assert len(list((tmp_path / "aug" / "images").rglob("*.png"))) == 10


def test_kfold_splits_need_a_fold(tmp_path):
    manifest, splits = toy_dataset(tmp_path)
    folds = pd.concat([splits.assign(fold=0), splits.assign(fold=1)], ignore_index=True)
    with pytest.raises(InputError, match="choose one with --fold"):
        ag.augment_training_split(manifest, folds, tmp_path / "aug", progress=False)
    result = ag.augment_training_split(manifest, folds, tmp_path / "aug", fold=1, progress=False)
    assert len(result[result["split"] == "train"]) == 18


# ----------------------------------------------------------------------------- Figure S2 and CLI


def cli(argv: list[str]) -> int:
    """Run `python -m data_prep augment ...` the way data_prep.__main__ does."""
    parser = argparse.ArgumentParser()
    ag.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["augment", *argv])
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"error: {err.one_line()}")
        return 2


def test_figure_s2_on_a_real_frame(tmp_path, pgds_sample_dir):
    frame = sorted(pgds_sample_dir.glob("genetic_disease/*.jpg"))[0]
    out = tmp_path / "figure_s2.png"
    assert cli(["--figure", str(out), "--image", str(frame), "--seed", "0"]) == 0
    assert out.stat().st_size > 10_000
    drawn = cv2.imread(str(out))
    assert drawn is not None and drawn.shape[1] > drawn.shape[0]


def test_cli_augments_a_manifest(tmp_path, capsys):
    manifest, splits = toy_dataset(tmp_path)
    manifest.drop(columns="abs_path").to_csv(tmp_path / "data" / "manifest.csv", index=False)
    splits.to_csv(tmp_path / "data" / "splits.csv", index=False)
    argv = ["--manifest", str(tmp_path / "data" / "manifest.csv"),
            "--splits", str(tmp_path / "data" / "splits.csv"), "--out", str(tmp_path / "aug"),
            "--normal-x", "3", "--disease-x", "4"]
    assert cli(argv) == 0
    written = pd.read_csv(tmp_path / "aug" / "manifest.csv", dtype=str, keep_default_na=False)
    assert len(written) == 3 * 3 + 2 * 4 + 3
    assert cli(argv) == 2 and "already exists" in capsys.readouterr().out
    assert cli(argv + ["--force"]) == 0
    assert cli(["--out", str(tmp_path / "x")]) == 2
