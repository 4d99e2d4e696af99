"""Reader-study calls for Tang 2023 Table 3: simulated on the phantom, or read from a user CSV.

Simulated readers (the phantom has no sonographers): for each level (junior, attending,
senior) every reader-study image gets one call drawn on its own, "genetic disease" with
probability = the level's sensitivity in Tang 2023 Table 3 when the image is diseased and
1 - specificity when it is normal (junior 0.42 / 0.73, attending 0.79 / 0.72, senior
0.88 / 0.93). Draws are seeded (numpy `default_rng([seed, level index])`), so the same seed
gives the same calls; the calls of different readers are independent given the truth and
do not depend on the image's content. Every row says `simulated=True`, and every output
built from them says "simulated readers". On a small phantom test set the simulated rates
scatter around the paper's (binomial noise on few images).

User reader CSV (`--readers R`, DESIGN.md data contract): columns `case_id` or `image_path`
(at least one), `reader`, `reader_level`, `call` (0/1 or normal/genetic_disease). Every cell
is checked; a problem raises InputError naming the file, the 1-based data row and the column.
A call given by `case_id` applies to each reader-study (test) image of that case. Calls on
images outside the test split are dropped with a warning (the model trained on them).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.errors import InputError

LEVELS = ("junior", "attending", "senior")
# Tang 2023 Table 3 (reproduce.paper_values.TANG2023_TABLE3): (sensitivity, specificity).
PAPER_RATES: dict[str, tuple[float, float]] = {
    "junior": (0.42, 0.73), "attending": (0.79, 0.72), "senior": (0.88, 0.93)}
CALL_COLUMNS = ("image_path", "case_id", "reader", "reader_level", "call", "simulated")
CALL_VALUES = {"0": 0, "1": 1, "normal": 0, "genetic_disease": 1}


def paper_rates() -> dict[str, tuple[float, float]]:
    """PAPER_RATES, read from reproduce.paper_values so the two can never disagree."""
    from reproduce.paper_values import TANG2023_TABLE3

    rows = {row.reader: row for row in TANG2023_TABLE3}
    return {level: (rows[level].sensitivity.value, rows[level].specificity.value) for level in LEVELS}


def draw_reader_images(test: pd.DataFrame, n_images: int, seed: int) -> pd.DataFrame:
    """`n_images` test images drawn at random without replacement (seeded; kept in the test
    table's order), or all of them when there are fewer."""
    if len(test) <= n_images:
        return test.reset_index(drop=True)
    rng = np.random.default_rng([int(seed), 2023, 3])
    chosen = np.sort(rng.choice(len(test), size=n_images, replace=False))
    return test.iloc[chosen].reset_index(drop=True)


def simulate_readers(images: pd.DataFrame, seed: int,
                     rates: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Simulated calls of one reader per level on `images` (columns image_path, case_id,
    y_true): CALL_COLUMNS with simulated=True."""
    rates = paper_rates() if rates is None else rates
    y_true = images["y_true"].to_numpy().astype(int)
    frames = []
    for index, level in enumerate(LEVELS):
        sensitivity, specificity = rates[level]
        rng = np.random.default_rng([int(seed), 2023, 30 + index])
        draw = rng.random(len(images))
        p_positive = np.where(y_true == 1, sensitivity, 1.0 - specificity)
        frames.append(pd.DataFrame({
            "image_path": images["image_path"].astype(str).to_numpy(),
            "case_id": images["case_id"].astype(str).to_numpy(),
            "reader": f"simulated {level}",
            "reader_level": level,
            "call": (draw < p_positive).astype(int),
            "simulated": True,
        }))
    return pd.concat(frames, ignore_index=True)[list(CALL_COLUMNS)]


def _norm_path(text: str) -> str:
    return Path(text.strip().replace("\\", "/")).as_posix()


def load_reader_csv(path: str | Path, images: pd.DataFrame) -> pd.DataFrame:
    """Read and validate a user reader CSV against `images` (the study's images: columns
    image_path, case_id, split). Returns CALL_COLUMNS (simulated=False), test images only."""
    from reproduce.study import read_user_csv

    path = Path(path)
    frame = read_user_csv(path, "reader CSV")
    for column in ("reader", "reader_level", "call"):
        if column not in frame.columns:
            raise InputError(path, f"missing required column (header has: "
                             f"{', '.join(frame.columns)})", column=column)
    if "image_path" not in frame.columns and "case_id" not in frame.columns:
        raise InputError(path, "needs a case_id or an image_path column to say what was read",
                         column="case_id")
    if frame.empty:
        raise InputError(path, "no reader calls: a header but no rows")
    frame = frame.apply(lambda column: column.str.strip())

    by_path = {_norm_path(p): i for i, p in enumerate(images["image_path"].astype(str))}
    case_images: dict[str, list[int]] = {}
    for i, case in enumerate(images["case_id"].astype(str)):
        case_images.setdefault(case, []).append(i)
    split = images["split"].astype(str).to_numpy()
    level_of: dict[str, tuple[str, int]] = {}
    seen: dict[tuple[str, int], int] = {}
    rows, outside = [], 0
    for number, record in enumerate(frame.to_dict("records"), start=1):
        for column in ("reader", "reader_level", "call"):
            if not record[column]:
                raise InputError(path, "empty value", row=number, column=column)
        call_text = record["call"].lower()
        if call_text not in CALL_VALUES:
            raise InputError(path, f"call '{record['call']}' must be 0, 1, normal or "
                             "genetic_disease", row=number, column="call")
        reader, level = record["reader"], record["reader_level"].lower()
        if reader in level_of and level_of[reader][0] != level:
            raise InputError(path, f"reader '{reader}' has reader_level '{level_of[reader][0]}' "
                             f"in row {level_of[reader][1]} and '{level}' here", row=number,
                             column="reader_level")
        level_of.setdefault(reader, (level, number))
        image_text = record.get("image_path", "")
        case_text = record.get("case_id", "")
        if image_text:
            key = _norm_path(image_text)
            if key not in by_path:
                raise InputError(path, f"image '{image_text}' is not in the manifest",
                                 row=number, column="image_path")
            targets = [by_path[key]]
            if case_text and images["case_id"].iloc[targets[0]] != case_text:
                raise InputError(path, f"case_id '{case_text}' does not match the manifest's "
                                 f"'{images['case_id'].iloc[targets[0]]}' for this image",
                                 row=number, column="case_id")
        elif case_text:
            if case_text not in case_images:
                raise InputError(path, f"case '{case_text}' is not in the manifest", row=number,
                                 column="case_id")
            targets = case_images[case_text]
        else:
            raise InputError(path, "give the image_path or the case_id of the call", row=number,
                             column="image_path" if "image_path" in frame.columns else "case_id")
        for target in targets:
            if (reader, target) in seen:
                raise InputError(path, f"reader '{reader}' has a second call on image "
                                 f"'{images['image_path'].iloc[target]}' (first in row "
                                 f"{seen[(reader, target)]})", row=number,
                                 column="image_path" if image_text else "case_id")
            seen[(reader, target)] = number
            if split[target] != "test":
                outside += 1
                continue
            rows.append({"image_path": str(images["image_path"].iloc[target]),
                         "case_id": str(images["case_id"].iloc[target]), "reader": reader,
                         "reader_level": level, "call": CALL_VALUES[call_text],
                         "simulated": False})
    if outside:
        print(f"warning: {path}: {outside} reader call(s) on images outside the test split were "
              "left out (the model was trained or selected on them)", file=sys.stderr)
    if not rows:
        raise InputError(path, "no reader call is on a test image of this split; the reader "
                         "study must be on held-out images")
    return pd.DataFrame(rows, columns=list(CALL_COLUMNS))
