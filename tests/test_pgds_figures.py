"""Tests of the Pgds figures: the pure plot functions on synthetic inputs (fast), the pure
helpers of the figure scripts (mask geometry, localisation table, example choice, reader
join), and each script's main on the ci-profile study (`pgds_ci_context`, trained once per
session by tests/conftest.py)."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from reproduce import stats  # noqa: E402
from reproduce.pgds import figure3, figure4, figures1, figures2, plots  # noqa: E402

MODELS = ("Pgds-ResNet", "ResNet-34", "VGG-16", "VGG-19")


def _scores(n_pos: int, n_neg: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    logit = rng.normal(0.0, 1.0, y_true.size) + separation * (2 * y_true - 1)
    return y_true, 1.0 / (1.0 + np.exp(-logit))


@pytest.fixture(scope="module")
def test_scores() -> pd.DataFrame:
    frames = []
    for index, (name, separation) in enumerate(zip(MODELS, (1.8, 0.7, 0.5, 0.9))):
        y_true, score = _scores(20, 40, separation, index)
        frames.append(pd.DataFrame({"model": name, "y_true": y_true, "score": score,
                                    "image_path": [f"img{i:03d}.png" for i in range(60)]}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def reader_table(test_scores) -> pd.DataFrame:
    model = test_scores[test_scores["model"] == MODELS[0]].reset_index(drop=True)
    rng = np.random.default_rng(7)
    frames = []
    # the level order of the paper must come out whatever the input order
    for level, (sensitivity, specificity) in (("senior", (0.9, 0.95)), ("junior", (0.4, 0.7)),
                                              ("attending", (0.8, 0.7))):
        positive = rng.random(len(model)) < np.where(model["y_true"] == 1, sensitivity,
                                                     1 - specificity)
        frames.append(model.assign(reader=f"simulated {level}", reader_level=level,
                                   call=positive.astype(int)))
    return pd.concat(frames, ignore_index=True)


def _texts(figure: Figure) -> str:
    from matplotlib.text import Text

    return "\n".join(t.get_text() for t in figure.findobj(Text))


# ----------------------------------------------------------------------------- small helpers


@pytest.mark.parametrize("y_true, score, threshold, expected", [
    ([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5, (0.5, 0.5)),
    ([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.4, (0.5, 1.0)),   # score == threshold is positive
    ([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], float("inf"), (0.0, 0.0)),
    ([0, 1, 1, 1], [0.0, 0.2, 0.3, 0.4], 0.0, (1.0, 1.0)),
])
def test_operating_point(y_true, score, threshold, expected):
    assert plots.operating_point(y_true, score, threshold) == pytest.approx(expected)


@pytest.mark.parametrize("y_true, calls, expected", [
    ([0, 0, 1, 1], [0, 1, 0, 1], [[1, 1], [1, 1]]),
    ([0, 0, 0, 1], [0, 0, 0, 1], [[3, 0], [0, 1]]),
    ([1, 1, 1], [0, 0, 0], [[0, 0], [3, 0]]),
])
def test_confusion_counts(y_true, calls, expected):
    assert plots.confusion_counts(y_true, calls).tolist() == expected


@pytest.mark.parametrize("y_true, calls", [([0, 1], [0, 2]), ([0, 1, 1], [0, 1])])
def test_confusion_counts_rejects_bad_calls(y_true, calls):
    with pytest.raises(ValueError):
        plots.confusion_counts(y_true, calls)


def test_reader_summary_rates_and_order(reader_table):
    summary = plots.reader_summary(reader_table)
    assert list(summary["reader_level"]) == ["junior", "attending", "senior"]
    for row in summary.itertuples():
        part = reader_table[reader_table["reader"] == row.reader]
        positives = part[part["y_true"] == 1]
        negatives = part[part["y_true"] == 0]
        assert row.sensitivity == pytest.approx(positives["call"].mean())
        assert row.specificity == pytest.approx(1 - negatives["call"].mean())
        assert row.n == len(part)


@pytest.mark.parametrize("reader, level, expected", [
    ("simulated senior", "senior", "simulated senior"), ("junior", "junior", "junior"),
    ("Dr A", "attending", "Dr A (attending)")])
def test_reader_name(reader, level, expected):
    assert plots.reader_name(reader, level) == expected


# ----------------------------------------------------------------------------- Figure 3


def test_roc_panel_has_four_curves_chance_line_and_operating_points(test_scores):
    figure = Figure()
    ax = figure.subplots()
    thresholds = {name: 0.5 for name in MODELS}
    summary = plots.draw_roc_curves(ax, test_scores, thresholds, n_boot=200)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sum(": AUC " in label for label in labels) == 4
    assert [label.split(":")[0] for label in labels[:4]] == list(MODELS)
    assert any(label.startswith("chance") for label in labels)
    assert any("operating point" in label for label in labels)
    assert "200 stratified bootstrap" in ax.get_legend().get_title().get_text()
    for row in summary.itertuples():
        part = test_scores[test_scores["model"] == row.model]
        assert row.auc == pytest.approx(roc_auc_score(part["y_true"], part["score"]))
        assert row.auc_lo <= row.auc <= row.auc_hi
        assert f"AUC {row.auc:.2f} ({row.auc_lo:.2f}\u2013{row.auc_hi:.2f})" in "\n".join(labels)
        assert (row.fpr, row.tpr) == pytest.approx(
            plots.operating_point(part["y_true"], part["score"], 0.5))
    # one dot per model at its operating point, the dotted chance line
    dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(dots) == 4
    chance = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(chance) == 1 and list(chance[0].get_xdata()) == [0, 1]
    assert "specificity" in ax.get_xlabel() and "sensitivity" in ax.get_ylabel()


def test_roc_panel_needs_a_threshold_per_model(test_scores):
    ax = Figure().subplots()
    with pytest.raises(ValueError, match="threshold"):
        plots.draw_roc_curves(ax, test_scores, {"Pgds-ResNet": 0.5}, n_boot=50)


def test_confusion_panel_counts_and_readable_text():
    ax = Figure().subplots()
    counts = np.array([[50, 5], [2, 18]])
    plots.draw_confusion(ax, counts, title="b")
    texts = {t.get_text(): t.get_color() for t in ax.texts}
    assert set(texts) == {"50\n(91%)", "5\n(9%)", "2\n(10%)", "18\n(90%)"}
    assert texts["50\n(91%)"] == "white"      # darkest cell: white text
    assert texts["2\n(10%)"] == "black"       # lightest cell: black text
    assert [t.get_text() for t in ax.get_xticklabels()] == list(plots.CLASS_LABELS)


def test_model_vs_readers_marks_points_outside_the_band():
    y_true, score = _scores(40, 60, 0.2, 11)   # a weak model: wide band near the diagonal
    frame = pd.DataFrame({"image_path": [f"i{i}" for i in range(100)], "y_true": y_true,
                          "score": score})
    perfect = frame.assign(reader="perfect", reader_level="senior", call=frame["y_true"])
    band = stats.roc_ci_band(y_true, score, n_boot=200, seed=0)
    # a reader exactly on the model's ROC at specificity 0.5 lies inside the band
    spec = 0.5
    sens = float(np.interp(spec, band.specificity, band.sensitivity))
    negatives, positives = np.flatnonzero(y_true == 0), np.flatnonzero(y_true == 1)
    call = np.zeros(100, int)
    call[negatives[: int(round((1 - spec) * negatives.size))]] = 1
    call[positives[: int(round(sens * positives.size))]] = 1
    middling = frame.assign(reader="middling", reader_level="junior", call=call)
    ax = Figure().subplots()
    summary = plots.draw_model_vs_readers(ax, pd.concat([perfect, middling]), model="M",
                                          threshold=0.5, band_boot=200)
    outside = dict(zip(summary["reader"], summary["outside_band"]))
    assert outside == {"middling": False, "perfect": True}
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("95% CI band (200 bootstrap)" in label for label in labels)
    assert any(label.startswith("perfect") and "outside band" in label for label in labels)
    assert any(label.startswith("middling") and "inside band" in label for label in labels)


def test_figure3_has_four_panels_with_titles(test_scores, reader_table):
    thresholds = {name: 0.5 for name in MODELS}
    figure = plots.figure3(test_scores, thresholds, reader_table, title="TITLE simulated readers",
                           n_boot=100, band_boot=50, readers_note="simulated readers")
    assert isinstance(figure, Figure)
    text = _texts(figure)
    for expected in ("a   ROC curves", "b   Pgds-ResNet", "c   Pgds-ResNet versus readers",
                     "d   confusion matrices", "TITLE simulated readers", "simulated junior",
                     "simulated attending", "simulated senior"):
        assert expected in text
    # panel d: the model's matrix and one per reader, on one colour scale
    matrices = [ax for ax in figure.findobj(lambda a: hasattr(a, "images"))
                if getattr(ax, "images", None) and ax.get_title().count("accuracy")]
    assert len(matrices) == 4
    assert len({ax.images[0].get_clim() for ax in matrices}) == 1


def test_figure3_without_readers_says_so(test_scores):
    figure = plots.figure3(test_scores, {name: 0.5 for name in MODELS}, None, n_boot=50,
                           no_readers_message="no reader study here")
    assert _texts(figure).count("no reader study here") == 2


def test_reader_table_join_and_missing_images(test_scores, reader_table):
    model = test_scores[test_scores["model"] == MODELS[0]]
    calls = reader_table[["image_path", "reader", "reader_level", "call"]].assign(simulated=True)
    joined = figure3.reader_table(calls, model)
    assert len(joined) == len(calls)
    assert (joined["y_true"].to_numpy() == reader_table["y_true"].to_numpy()).all()
    with pytest.raises(ValueError, match="did not score"):
        figure3.reader_table(calls.assign(image_path="elsewhere.png"), model)


@pytest.mark.parametrize("n_images, simulated, n_test, expected", [
    (100, True, 186, "simulated readers"),
    (18, True, 18, "simulated readers; every test image (the paper: 100)"),
    (18, False, 18, "every test image (the paper: 100)"),
    (100, False, 186, ""),
])
def test_readers_note(n_images, simulated, n_test, expected):
    calls = pd.DataFrame({"image_path": [f"i{i}" for i in range(n_images)],
                          "simulated": simulated})
    assert figure3.readers_note(calls, n_test) == expected


# ----------------------------------------------------------------------------- Figure 4


def _example(group: str, seed: int, with_mask: bool) -> plots.HeatmapExample:
    rng = np.random.default_rng(seed)
    image = (rng.random((32, 35)) * 255).astype(np.uint8)
    heat = rng.random((32, 35)).astype(np.float32)
    mask = np.zeros((32, 35), bool)
    mask[10:16, 20:26] = True
    return plots.HeatmapExample(group, image, heat, f"{group} example {seed}",
                                mask if with_mask else None)


def test_figure4_rows_by_group_pairs_and_colour_bar():
    examples = [_example("normal", 0, False), _example("T21", 1, True), _example("T13", 2, True),
                _example("T13", 3, True), _example("rare", 4, True)]
    figure = plots.figure4(examples, title="Figure 4 layer 'post_relu'")
    axes = figure.axes
    grid = [ax for ax in axes if ax.get_label() != "<colorbar>"]
    assert len(grid) == 4 * 2 * 2               # 4 groups x 2 examples x 2 panels
    row_labels = [ax.get_ylabel() for ax in grid if ax.get_ylabel()]
    assert row_labels == ["Trisomy 13", "Trisomy 21", "rare genetic disease", "normal"]
    shown = [ax for ax in grid if ax.images]
    assert len(shown) == 2 * len(examples)
    overlays = [ax for ax in shown if ax.get_title(loc="left").startswith("B")]
    # the truth-mask outline on every overlay that has a mask (4 of the 5)
    assert sum(bool(ax.collections) for ax in overlays) == 4
    colour_bar = [ax for ax in axes if ax.get_label() == "<colorbar>"]
    assert len(colour_bar) == 1 and "Grad-CAM" in colour_bar[0].get_ylabel()
    assert "post_relu" in _texts(figure)


def test_figure4_needs_examples():
    with pytest.raises(ValueError):
        plots.figure4([])


@pytest.mark.parametrize("column, expected_exact", [(1, True), (0, False), (3, True), (2, False)])
def test_resize_mask_uses_half_pixel_centres(column, expected_exact):
    """Halving 4 -> 2 columns samples source columns 1 and 3 (pixel centres, as the bilinear
    image resize), not 0 and 2 (cv2.INTER_NEAREST's corner rule)."""
    mask = np.zeros((4, 4), np.uint8)
    mask[:, column] = 255
    resized = figure4.resize_mask(mask, (2, 2))
    assert resized.dtype == bool and resized.shape == (2, 2)
    assert bool(resized.any()) is expected_exact


def test_resize_mask_lines_up_with_the_image_resize():
    """A bright square in a frame and its mask, resized to a model input of another aspect:
    the mask covers the same pixels as the square in the bilinear-resized image."""
    frame = np.zeros((240, 280), np.uint8)
    frame[100:160, 170:230] = 255
    mask = frame > 0
    image = cv2.resize(frame, (140, 128), interpolation=cv2.INTER_LINEAR)
    resized = figure4.resize_mask(mask, (128, 140))
    bright = image >= 128
    assert (bright ^ resized).sum() <= 0.02 * bright.sum()


def _loc_rows() -> tuple[pd.DataFrame, np.ndarray, list[np.ndarray]]:
    rows = pd.DataFrame({"image_path": ["a.png", "b.png", "c.png", "d.png"],
                         "subtype": ["T21", "T21", "T13", "rare"],
                         "score": [0.9, 0.1, 0.8, 0.7], "y_true": [1, 1, 1, 1]})
    mask = np.zeros((20, 20), bool)
    mask[2:6, 2:6] = True
    heats = np.zeros((4, 20, 20), np.float32)
    heats[0, 3, 3] = 1.0           # hit
    heats[1, 3, 4] = 1.0           # hit, but a false negative
    heats[2, 18, 18] = 1.0         # miss
    heats[3] = 0.5
    heats[3, 1, 3] = 0.6           # max 1 px from the mask: within 15 * 20 / 224 = 1.3 px
    return rows, heats, [mask] * 4


def test_localisation_frame_columns_and_scores():
    rows, heats, masks = _loc_rows()
    table = figure4.localisation_frame(rows, heats, masks, threshold=0.5, layer="L", method="m")
    assert list(table.columns) == list(figure4.BASE_COLUMNS + figure4.SCORE_COLUMNS
                                       + figure4.TAIL_COLUMNS)
    assert table["called_positive"].tolist() == [True, False, True, True]
    assert table["true_positive"].tolist() == [True, False, True, True]
    assert table["pointing_game_hit"].tolist() == [True, True, False, True]
    assert table["mask_area_share"].tolist() == pytest.approx([16 / 400] * 4)
    assert table.loc[0, "energy_inside"] == pytest.approx(1.0)
    assert set(table["layer"]) == {"L"} and set(table["method"]) == {"m"}
    assert figure4.hit_rate_true_positives(table) == (2, 3)


def test_localisation_summary_and_markdown():
    rows, heats, masks = _loc_rows()
    table = figure4.localisation_frame(rows, heats, masks, threshold=0.5, layer="L", method="m")
    summary = figure4.localisation_summary(table)
    assert summary["group"].tolist() == ["all diseased", "T13", "T21", "rare"]
    first = summary.iloc[0]
    assert first["images"] == 4 and first["true_positives"] == 3
    assert first["hit_rate_true_positives"].startswith("2/3 = 0.67")
    assert first["hit_rate_all"].startswith("3/4 = 0.75")
    text = figure4.localisation_markdown(
        table, label="LABEL", model_name="Pgds-ResNet", layer="L", grid_hw=(4, 5),
        input_hw=(20, 20), method="m", threshold=0.5, rule="best F1", skipped=1, has_masks=True)
    for expected in ("LABEL", "`L` (4x5 feature map", "INTER_NEAREST_EXACT", "1 diseased test",
                     "2/3 = 0.67 -- NOT met", "area share"):
        assert expected in text


def test_localisation_without_masks_drops_the_score_columns():
    rows, _, _ = _loc_rows()
    table = figure4.localisation_frame(rows, None, None, threshold=0.5, layer="L", method="m")
    assert list(table.columns) == list(figure4.BASE_COLUMNS + figure4.TAIL_COLUMNS)
    text = figure4.localisation_markdown(
        table, label="LABEL", model_name="M", layer="L", grid_hw=(4, 5), input_hw=(20, 20),
        method="m", threshold=0.5, rule="best F1", skipped=0, has_masks=False)
    assert "No truth masks" in text and "WITHOUT the scoring columns" in text


def test_choose_examples_prefers_correct_calls_and_is_seeded():
    test = pd.DataFrame({
        "image_path": [f"{s}{i}" for s in ("T13", "T21", "N") for i in range(4)],
        "subtype": ["T13"] * 4 + ["T21"] * 4 + ["normal"] * 4,
        "y_true": [1] * 8 + [0] * 4,
        "score": [0.9, 0.1, 0.8, 0.2, 0.1, 0.2, 0.3, 0.9, 0.1, 0.9, 0.9, 0.9]})
    chosen = figure4.choose_examples(test, 0.5, seed=0)
    assert chosen["subtype"].tolist() == ["T13", "T13", "T21", "T21", "normal"]
    t13 = chosen[chosen["subtype"] == "T13"]
    assert (t13["score"] >= 0.5).all()                       # both true positives
    t21 = chosen[chosen["subtype"] == "T21"]
    assert (t21["score"] >= 0.5).sum() == 1                  # the only TP, then a FN
    assert chosen[chosen["subtype"] == "normal"]["image_path"].tolist() == ["N0"]  # the TN
    assert chosen.equals(figure4.choose_examples(test, 0.5, seed=0))


# ----------------------------------------------------------------------------- Figures S1, S2


def test_figure_s1_annotates_n_and_mean_sd():
    rng = np.random.default_rng(3)
    table = pd.DataFrame({"label": ["normal"] * 30 + ["genetic_disease"] * 12,
                          "subtype": ["normal"] * 30 + ["T21"] * 6 + ["T18"] * 6,
                          "gestational_week": np.round(rng.uniform(11, 27, 42), 1)})
    figure = plots.figure_s1(table, title="S1", caption="Tang 2023 report 14.8 \u00b1 2.6")
    text = _texts(figure)
    normal = table.loc[table["label"] == "normal", "gestational_week"]
    assert f"n = 30\n{normal.mean():.1f} \u00b1 {normal.std(ddof=1):.1f}" in text
    assert "n = 12" in text and "n = 6" in text and "14.8 \u00b1 2.6" in text
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["normal", "genetic disease\n(all)",
                                                            "T18", "T21"]
    assert "weeks" in ax.get_ylabel()


def test_figure_s1_rejects_missing_weeks():
    table = pd.DataFrame({"label": ["normal", "genetic_disease"], "gestational_week": [12, None]})
    with pytest.raises(ValueError, match="missing"):
        plots.figure_s1(table)


def test_figure_s1_caption_states_the_paper():
    table = pd.DataFrame({"label": ["normal", "genetic_disease"], "case_id": ["a", "b"],
                          "gestational_week": [12.0, 14.0]})
    text = figures1.caption(table)
    assert "13.0 \u00b1 1.4 weeks, range 12.0\u201314.0" in text
    assert "14.8 \u00b1 2.6" in text and "11\u201327" in text


def test_figure_s2_panels_match_data_prep_transforms():
    from data_prep.augment import METHODS, apply_transform, sample_transform

    rng = np.random.default_rng(0)
    image = (rng.random((60, 66)) * 255).astype(np.uint8)
    figure = plots.figure_s2(image, seed=5, title="S2", note="NOTE")
    shown = [ax for ax in figure.axes if ax.images]
    assert len(shown) == 1 + len(METHODS)
    assert np.array_equal(shown[0].images[0].get_array(), image)
    for index, (ax, method) in enumerate(zip(shown[1:], METHODS)):
        transform = sample_transform(method, image.shape, np.random.default_rng([5, index]))
        assert np.array_equal(ax.images[0].get_array(), apply_transform(image, transform))
    assert "NOTE" in _texts(figure)


def test_sample_frame_prefers_normal(tmp_path):
    assert figures2.sample_frame(tmp_path / "absent") is None
    (tmp_path / "normal").mkdir()
    (tmp_path / "genetic_disease").mkdir()
    for name in ("normal/b.jpg", "normal/a.png", "genetic_disease/0.jpg", "normal/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert figures2.sample_frame(tmp_path) == tmp_path / "normal" / "a.png"


# ----------------------------------------------------------------------------- the scripts


def _args(ctx) -> list[str]:
    return ["--profile", ctx.profile, "--runs", str(ctx.runs_dir), "--results",
            str(ctx.results_dir), "--seed", str(ctx.seed)]


@pytest.mark.parametrize("module, extra, png", [
    (figure3, [], "figure3.png"),
    (figure4, [], "figure4.png"),
    (figure4, ["--method", "gradcam++", "--layer", "post_relu"], "figure4.png"),
    (figures1, [], "figures1.png"),
    (figures2, [], "figures2.png"),
])
def test_figure_mains_write_small_pngs(pgds_ci_context, module, extra, png):
    ctx = pgds_ci_context
    assert module.main(_args(ctx) + extra) == 0
    path = Path(ctx.results_dir) / png
    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size < 500 * 1024
    if module is figure4:
        table = pd.read_csv(Path(ctx.results_dir) / "gradcam_localisation.csv")
        assert list(table.columns) == list(figure4.BASE_COLUMNS + figure4.SCORE_COLUMNS
                                           + figure4.TAIL_COLUMNS)
        assert len(table) > 0 and set(table["subtype"]) <= {"T13", "T18", "T21", "rare"}
        # default on ci: LayerCAM of the outputs of stages 1 and 2 (pipeline.HEATMAP_SETTINGS)
        layer = (extra[extra.index("--layer") + 1] if "--layer" in extra
                 else "stage2_block1_preact_relu+stage3_block1_preact_relu")
        method = extra[extra.index("--method") + 1] if "--method" in extra else "layercam"
        assert set(table["layer"]) == {layer} and set(table["method"]) == {method}
        assert table["energy_inside"].between(0, 1).all()
        markdown = (Path(ctx.results_dir) / "gradcam_localisation.md").read_text()
        assert f"`{layer}`" in markdown and "PHANTOM" in markdown


def test_figure4_bad_layer_is_a_one_line_error(pgds_ci_context, capsys):
    assert figure4.main(_args(pgds_ci_context) + ["--layer", "no_such_layer"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_such_layer" in err and "post_relu" in err
