"""Leakage audit: cases in two splits, exact and near-duplicate images across splits.

Real frames are decoded and written to pytest's tmp_path (never into the project).
"""
from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import cv2
import imagehash
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_prep import audit as au
from data_prep.errors import InputError
from data_prep.io import read_grayscale


def pgds_frames(pgds_sample_dir: Path) -> list[Path]:
    return sorted(pgds_sample_dir.glob("*/*.jpg"))


def hc18_frames(hc18_dir: Path) -> list[Path]:
    return sorted(p for p in hc18_dir.glob("*.png") if not p.name.endswith("_Mask.png"))


def resized_jpeg(pixels: np.ndarray, scale: float, quality: int, back: bool) -> np.ndarray:
    """Resize by `scale` (and back to the original size if `back`), then JPEG re-encode."""
    h, w = pixels.shape
    out = cv2.resize(pixels, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    if back:
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    ok, encoded = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)


class Dataset:
    """A manifest + splits in tmp_path built from (name, pixels-or-bytes, case, split) entries."""

    def __init__(self, root: Path):
        self.root = root
        self.rows: list[dict] = []

    def add(self, name: str, case: str, split: str, *, pixels: np.ndarray | None = None,
            data: bytes | None = None, label: str = "normal") -> str:
        path = self.root / "img" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
        else:
            assert cv2.imwrite(str(path), pixels)
        self.rows.append({"image_path": f"img/{name}", "case_id": case, "label": label, "split": split})
        return f"img/{name}"

    def write(self) -> tuple[Path, Path]:
        frame = pd.DataFrame(self.rows)
        frame[["image_path", "case_id", "label"]].to_csv(self.root / "manifest.csv", index=False)
        frame[["image_path", "case_id", "split"]].to_csv(self.root / "splits.csv", index=False)
        return self.root / "manifest.csv", self.root / "splits.csv"


@pytest.fixture
def frames(pgds_sample_dir):
    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in pgds_frames(pgds_sample_dir)]


@pytest.fixture
def clean_dataset(tmp_path, frames) -> Dataset:
    data = Dataset(tmp_path)
    for index, pixels in enumerate(frames):
        data.add(f"f{index}.png", f"case{index}", ["train", "train", "val", "test"][index % 4],
                 pixels=pixels, label="normal" if index < 4 else "genetic_disease")
    return data


def cli(argv: list[str]) -> int:
    """Run `python -m data_prep audit ...` the way data_prep.__main__ does."""
    parser = argparse.ArgumentParser()
    au.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", *argv])
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"error: {err.one_line()}")
        return 2


# ----------------------------------------------------------------------------- verdicts


def test_clean_splits_exit_0(clean_dataset, tmp_path, capsys):
    manifest, splits = clean_dataset.write()
    report = au.audit(manifest, splits)
    assert (report.case_leaks, report.exact_pairs, report.near_pairs) == ([], [], [])
    assert report.exit_code == 0 and report.images_hashed
    assert report.min_distinct_distance > au.DEFAULT_HASH_DISTANCE
    assert cli(["--manifest", str(manifest), "--splits", str(splits), "--out", str(tmp_path / "rep")]) == 0
    assert "clean (exit 0)" in capsys.readouterr().out
    pairs = pd.read_csv(tmp_path / "rep" / "duplicate_pairs.csv")
    assert list(pairs.columns) == au.PAIR_COLUMNS and len(pairs) == 0


def test_case_in_two_splits_exits_2_naming_row_and_case(clean_dataset, frames, capsys):
    clean_dataset.add("extra.png", "case0", "test", pixels=np.flipud(frames[0]).copy())  # case0 is train
    manifest, splits = clean_dataset.write()
    report = au.audit(manifest, splits)
    assert [(leak.case_id, leak.splits, leak.row) for leak in report.case_leaks] == \
        [("case0", ("test", "train"), 9)]
    assert report.exit_code == 2 and not report.images_hashed
    assert cli(["--manifest", str(manifest), "--splits", str(splits)]) == 2
    out = capsys.readouterr()
    line = out.err.strip()
    assert line.count("\n") == 0
    assert str(splits) in line and "row 9" in line and "column 'case_id'" in line and "'case0'" in line


def test_exact_copies_across_splits_exit_1(clean_dataset, frames, pgds_sample_dir, tmp_path, capsys):
    first_jpeg = pgds_frames(pgds_sample_dir)[0]
    same_bytes = clean_dataset.add("bytes_a.jpg", "jb1", "train", data=first_jpeg.read_bytes())
    same_bytes_b = clean_dataset.add("bytes_b.jpg", "jb2", "test", data=first_jpeg.read_bytes())
    # Same pixels, different file bytes: a PNG of f2.png (val), compressed harder, in test.
    pixels_copy = clean_dataset.add("pixels_copy.png", "pc", "test", pixels=frames[2])
    cv2.imwrite(str(tmp_path / "img" / "pixels_copy.png"), frames[2], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert (tmp_path / "img" / "pixels_copy.png").read_bytes() != (tmp_path / "img" / "f2.png").read_bytes()
    manifest, splits = clean_dataset.write()
    report = au.audit(manifest, splits)
    found = {(p.image_a, p.image_b, p.kind, p.detail) for p in report.exact_pairs}
    assert (same_bytes, same_bytes_b, "exact", "identical file bytes") in found
    assert ("img/f2.png", pixels_copy, "exact", "identical pixels") in found
    assert report.near_pairs == [] and report.exit_code == 1
    assert cli(["--manifest", str(manifest), "--splits", str(splits), "--out", str(tmp_path / "r")]) == 1
    pairs = pd.read_csv(tmp_path / "r" / "duplicate_pairs.csv")
    assert set(pairs["kind"]) == {"exact"} and (pairs["distance"] == 0).all()
    assert "LEAK" in capsys.readouterr().out


@pytest.mark.parametrize("scale, quality, back", [(0.8, 75, True), (0.8, 75, False), (1.25, 75, False),
                                                  (0.5, 60, False)])
def test_resized_and_reencoded_copy_is_near_duplicate(clean_dataset, frames, scale, quality, back):
    copy = clean_dataset.add("copy.png", "other_case", "test",
                             data=cv2.imencode(".png", resized_jpeg(frames[1], scale, quality, back))[1].tobytes())
    manifest, splits = clean_dataset.write()
    report = au.audit(manifest, splits)
    assert report.exact_pairs == []
    assert [(p.image_a, p.split_a, p.image_b, p.split_b, p.kind) for p in report.near_pairs] == \
        [("img/f1.png", "train", copy, "test", "near")]
    assert report.near_pairs[0].distance <= 3
    assert report.exit_code == 1


def test_duplicate_within_one_split_is_not_a_leak(clean_dataset, frames):
    clean_dataset.add("dup.png", "case0b", "train", pixels=resized_jpeg(frames[0], 0.8, 75, True))
    manifest, splits = clean_dataset.write()
    report = au.audit(manifest, splits)
    assert report.exit_code == 0 and report.within_split_pairs == 1


def test_kfold_splits_report_the_folds_where_copies_separate(tmp_path, frames):
    from data_prep.splits import stratified_group_kfold

    data = Dataset(tmp_path)
    for index, pixels in enumerate(frames):
        data.add(f"f{index}.png", f"case{index}", "train", pixels=pixels,
                 label="normal" if index % 2 else "genetic_disease")
    data.add("copy.png", "copycase", "train", pixels=resized_jpeg(frames[2], 0.8, 75, True),
             label="genetic_disease")
    manifest, _ = data.write()
    splits = stratified_group_kfold(pd.read_csv(manifest, dtype=str), k=3, seed=0)
    splits.to_csv(tmp_path / "kfold.csv", index=False)
    report = au.audit(manifest, tmp_path / "kfold.csv")
    tests = splits[splits["split"] == "test"].set_index("image_path")["fold"]
    fold_a, fold_b = tests["img/f2.png"], tests["img/copy.png"]
    assert fold_a != fold_b  # seed 0 tests them in different folds
    # Both are train wherever neither is tested, so they separate exactly in their two test folds.
    assert sorted(p.fold for p in report.near_pairs) == sorted([fold_a, fold_b])
    assert all(p.kind == "near" and p.split_a != p.split_b for p in report.near_pairs)
    assert report.exit_code == 1


# ----------------------------------------------------------------------------- threshold on real frames


def test_default_threshold_has_margin_on_real_frames(pgds_sample_dir, hc18_dir):
    """No false positives among 48 distinct real frames; modified copies stay far below."""
    paths = pgds_frames(pgds_sample_dir) + hc18_frames(hc18_dir)
    assert len(paths) == 48
    prints = au.fingerprints(paths, progress=False)
    pairs = list(itertools.combinations(range(len(paths)), 2))
    phash = [int(np.bitwise_count(prints.phash[i] ^ prints.phash[j])) for i, j in pairs]
    both = [max(d, int(np.bitwise_count(prints.dhash[i] ^ prints.dhash[j]))) for (i, j), d in zip(pairs, phash)]
    assert min(phash) >= 12 and min(both) >= 12  # measured: 12 (0_50 vs 0_74) for both
    assert min(both) >= 2 * au.DEFAULT_HASH_DISTANCE
    assert au.min_pair_distance(prints.phash, set()) == min(phash)
    copies = []
    for path in paths[::4]:
        pixels = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        original = Image.fromarray(pixels)
        for scale, quality in [(0.8, 75), (0.5, 60), (1.3, 50)]:
            modified = Image.fromarray(resized_jpeg(pixels, scale, quality, back=False))
            copies.append(max(imagehash.phash(original) - imagehash.phash(modified),
                              imagehash.dhash(original) - imagehash.dhash(modified)))
    assert max(copies) <= au.DEFAULT_HASH_DISTANCE - 3  # measured: 3


def test_real_frames_across_splits_are_clean(tmp_path, pgds_sample_dir, hc18_dir):
    data = Dataset(tmp_path)
    for index, path in enumerate(pgds_frames(pgds_sample_dir) + hc18_frames(hc18_dir)):
        data.add(f"r{index}{path.suffix}", f"r{index}", ("train", "val", "test")[index % 3],
                 data=path.read_bytes())
    manifest, splits = data.write()
    report = au.audit(manifest, splits)
    assert report.exit_code == 0 and report.within_split_pairs == 0
    assert report.min_distinct_distance == 12


# ----------------------------------------------------------------------------- vectorised Hamming


@pytest.mark.parametrize("n, max_distance", [(0, 6), (1, 6), (300, 26), (1000, 24)])
def test_hamming_pairs_match_brute_force(n, max_distance):
    rng = np.random.default_rng(n)
    hashes = rng.integers(0, 2**63, size=n, dtype=np.uint64) | (rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(63))
    i, j, d = au.hamming_pairs(hashes, max_distance, block_cells=5000)
    found = set(zip(i.tolist(), j.tolist(), d.tolist()))
    expected = {(a, b, bin(int(hashes[a]) ^ int(hashes[b])).count("1"))
                for a, b in itertools.combinations(range(n), 2)
                if bin(int(hashes[a]) ^ int(hashes[b])).count("1") <= max_distance}
    assert found == expected


def test_hash_bits_match_imagehash(frames):
    picture = Image.fromarray(frames[0])
    bits = au._hash_bits(imagehash.phash(picture))
    other = au._hash_bits(imagehash.phash(Image.fromarray(frames[1])))
    assert int(np.bitwise_count(bits ^ other)) == imagehash.phash(picture) - imagehash.phash(Image.fromarray(frames[1]))


def test_pairwise_hamming_3000_is_vectorised():
    """All 4.5 M pairs of 3,000 hashes, per pair far cheaper than a Python loop's XOR-popcount
    (ratio measured in this run: ~12x here)."""
    hashes = np.random.default_rng(0).integers(0, 2**63, size=3000, dtype=np.uint64)
    started = time.perf_counter()
    au.hamming_pairs(hashes, 6)
    vectorised_per_pair = (time.perf_counter() - started) / (3000 * 2999 / 2)
    values = [int(h) for h in hashes[:200]]
    started = time.perf_counter()
    looped = sum(bin(a ^ b).count("1") <= 6 for k, a in enumerate(values) for b in values[k + 1:])
    loop_per_pair = (time.perf_counter() - started) / (200 * 199 / 2)
    assert looped == len(au.hamming_pairs(hashes[:200], 6)[0])
    assert vectorised_per_pair < loop_per_pair / 5, (
        f"{vectorised_per_pair * 1e9:.0f} ns per pair vs {loop_per_pair * 1e9:.0f} ns in a loop")


# ----------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize("target, old, new, blamed, row, column", [
    ("splits", "img/f2.png", "img/nowhere.png", "splits", 3, "image_path"),
    ("splits", "img/f5.png,case5,train", "img/f5.png,case5,holdout", "splits", 6, "split"),
    ("splits", "img/f4.png,case4,", "img/f4.png,someone_else,", "splits", 5, "case_id"),
    ("splits", "img/f6.png,case6,val\n", "", "manifest", 7, "image_path"),
    ("manifest", "img/f1.png,case1,normal\n", "img/f1.png,case1,normal\nimg/f1.png,case1,normal\n",
     "manifest", 3, "image_path"),
])
def test_malformed_input_names_file_row_and_column(clean_dataset, capsys, target, old, new, blamed,
                                                   row, column):
    paths = dict(zip(("manifest", "splits"), clean_dataset.write()))
    text = paths[target].read_text()
    assert old in text
    paths[target].write_text(text.replace(old, new, 1))
    with pytest.raises(InputError) as err:
        au.audit(paths["manifest"], paths["splits"])
    assert (err.value.file, err.value.row, err.value.column) == (str(paths[blamed]), row, column)
    assert cli(["--manifest", str(paths["manifest"]), "--splits", str(paths["splits"])]) == 2
    assert capsys.readouterr().out.startswith("error: ")


# ----------------------------------------------------------------------------- scale


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the issue's goal (audit < 6x reading time) is not met "
                   "yet: 6.7-7.7x measured with the transformed-copy check (3,000 random frames: "
                   "fingerprints 2.8x, the keypoint stage 4.9x reading); strict, so the suite "
                   "says when it is")
def test_audit_of_3000_images_costs_little_more_than_reading_them(tmp_path):
    """3,000 distinct synthetic 440x400 frames: clean, and audited at a small multiple of the
    time it takes only to read them (measured here: ~1.5x with the hash checks alone; 6.7x-9x
    with the transformed-copy check, whose keypoint stage verifies ~6 candidates per frame of
    these random frames: the goal of < 6x is open)."""
    rng = np.random.default_rng(0)
    data = Dataset(tmp_path)
    for index in range(3000):
        small = rng.random((25, 28)).astype(np.float32)
        pixels = np.clip(cv2.resize(small, (440, 400), interpolation=cv2.INTER_CUBIC) * 255, 0, 255)
        data.add(f"s{index:04d}.png", f"s{index // 2}", ("train", "val", "test")[(index // 2) % 3],
                 pixels=pixels.astype(np.uint8))
    manifest, splits = data.write()
    started = time.perf_counter()
    for path in sorted(tmp_path.rglob("*.png")):
        read_grayscale(path)
    read_seconds = time.perf_counter() - started
    report = au.audit(manifest, splits, progress=False)
    assert report.exit_code == 0
    assert report.seconds < 6 * read_seconds, f"audit {report.seconds:.1f} s, reading {read_seconds:.1f} s"


# ----------------------------------------------------------------------------- exporter-style copies


def test_exporter_copies_of_real_frames_are_found_without_false_pairs(tmp_path, pgds_sample_dir, hc18_dir):
    """48 real frames x 10 flipped/rotated/sheared/cropped/re-toned/resized/JPEG copies (528
    frames): >= 95 % of copies paired with their source, <= 1 false pair per 1,000 frames
    (measured: recall 0.956, 0 false pairs)."""
    from data_prep.exporter_copies import score_pairs, write_copy_set

    frames = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
              for p in pgds_frames(pgds_sample_dir) + hc18_frames(hc18_dir)]
    paths, sources, _ = write_copy_set(frames, 10, 0, tmp_path / "copies")
    found = au.duplicate_pairs(paths, au.fingerprints(paths, progress=False))
    recall, false_pairs = score_pairs(found, sources)
    assert recall >= 0.95, recall
    assert false_pairs <= len(paths) / 1000, false_pairs


def test_flipped_rotated_copy_across_splits_is_a_transformed_leak(clean_dataset, frames):
    copy = np.rot90(np.fliplr(frames[3]), 1)
    h, w = copy.shape
    copy = cv2.warpAffine(np.ascontiguousarray(copy), cv2.getRotationMatrix2D((w / 2, h / 2), 6, 1.0), (w, h))
    clean_dataset.add("copy.png", "other_case", "train", pixels=np.clip(copy * 1.2 + 10, 0, 255).astype(np.uint8))
    manifest, splits = clean_dataset.write()
    report = au.audit(manifest, splits)  # f3 is in test
    assert [(p.image_a, p.image_b, p.kind) for p in report.near_pairs] == [("img/f3.png", "img/copy.png", "transformed")]
    assert report.near_pairs[0].matched_keypoints >= au.MIN_MATCHED_KEYPOINTS and report.exit_code == 1
