"""Pure plotting functions for the Pgds study's figures (Tang 2023 Figures 3, 4, S1, S2).

Every public function here takes tables or arrays and returns a `matplotlib.figure.Figure`
(no pyplot state, no files, no model): the `figure*.py` scripts load the data through
`reproduce.pgds.pipeline` and save what these functions return with `pipeline.write_figure`.

- `figure3(test_scores, thresholds, reader_table, ...)`: (a) one ROC curve per architecture on
  the test split, AUROC with its stratified-bootstrap 95% CI in the legend, each model's
  operating point (its training-set threshold) and the dotted chance line; (b) the model's
  confusion matrix at that threshold; (c) the model's ROC on the readers' images with its 95%
  bootstrap CI band (pROC ``ci.se``, 200 replicates, Hong 2021) and each reader's point, filled
  when inside the band and hollow when outside (`stats.outside_band`); (d) one small confusion
  matrix per reader and the model's on the same images, on one colour scale.
- `figure4(examples, ...)`: heat-maps (Grad-CAM or LayerCAM); one row per group (T13, T18,
  T21, rare, normal), each example as an (original, heat-map overlay) pair, the truth-mask
  outline on the overlay when known, one colour bar.
- `figure_s1(table, ...)`: violins of the gestational week per class and per subtype with n and
  mean ± SD over each, the paper's 14.8 ± 2.6 (range 11-27) in the caption.
- `figure_s2(image, ...)`: the augmentation panel of `data_prep.augment.figure_s2` (same
  transforms for the same seed) as a Figure, so the caller chooses the title and the writer.

Helpers used by the scripts and the tests: `operating_point`, `reader_summary`,
`confusion_counts`. Figures are sized for about 150 dpi and carry 9-13 pt text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from reproduce import stats

#: Class names as the paper's Figure 3 prints them (index 0 = negative, 1 = positive).
CLASS_LABELS: tuple[str, str] = ("normal", "genetic disease")
#: Reader levels in the paper's order (Table 3).
READER_LEVELS: tuple[str, ...] = ("junior", "attending", "senior")
#: Figure 4 / S1 group order, and how a group is named on the figure.
GROUP_ORDER: tuple[str, ...] = ("T13", "T18", "T21", "rare", "normal")
GROUP_NAMES: dict[str, str] = {
    "T13": "Trisomy 13", "T18": "Trisomy 18", "T21": "Trisomy 21",
    "rare": "rare genetic disease", "normal": "normal",
}
CONFUSION_CMAP = "Blues"
HEATMAP_CMAP = "jet"

# Text sizes (pt) that stay readable when a figure is shown at column width.
STYLE: dict[str, object] = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9,
    "ytick.labelsize": 9, "legend.fontsize": 8.5, "figure.titlesize": 12,
    "axes.spines.top": False, "axes.spines.right": False,
}
_MARKERS = {"junior": "o", "attending": "s", "senior": "^"}
_MODEL_COLOURS = ("#c0392b", "#2471a3", "#239b56", "#7d3c98", "#d68910", "#5d6d7e")
_READER_COLOURS = {"junior": "#d68910", "attending": "#7d3c98", "senior": "#239b56"}


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=150, layout="constrained")


def _wrap(text: str, chars: int) -> str:
    import textwrap

    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def _suptitle(figure: Figure, title: str, fontsize: float, **kwargs) -> None:
    """A figure title wrapped to the figure's width, so a long label never widens the PNG."""
    import textwrap

    if not title:
        return
    chars = max(40, int(figure.get_figwidth() * 130 / fontsize))
    lines = [textwrap.fill(line, chars) for line in title.split("\n")]
    figure.suptitle("\n".join(lines), fontsize=fontsize, **kwargs)


def _require_columns(table: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {', '.join(missing)}; it has "
                         f"{', '.join(map(str, table.columns))}")


def _binary(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array")
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return array.astype(int)


# ----------------------------------------------------------------------------- small helpers


def confusion_counts(y_true, calls) -> np.ndarray:
    """2x2 counts [[TN, FP], [FN, TP]]: rows = gold standard, columns = call (0, 1)."""
    from sklearn.metrics import confusion_matrix

    truth = _binary(y_true, "y_true")
    called = _binary(calls, "calls")
    if truth.size != called.size:
        raise ValueError(f"y_true has {truth.size} values but calls has {called.size}")
    return confusion_matrix(truth, called, labels=[0, 1])


def operating_point(y_true, score, threshold: float) -> tuple[float, float]:
    """(1 - specificity, sensitivity) of calling `score >= threshold` positive."""
    truth = _binary(y_true, "y_true")
    calls = (np.asarray(score, dtype=float) >= threshold).astype(int)
    (tn, fp), (fn, tp) = confusion_counts(truth, calls)
    fpr = fp / (tn + fp) if tn + fp else float("nan")
    tpr = tp / (tp + fn) if tp + fn else float("nan")
    return float(fpr), float(tpr)


def reader_name(reader: str, level: str) -> str:
    """'senior' / 'simulated senior' as they are; 'Dr A' at level senior -> 'Dr A (senior)'."""
    return reader if level in reader else f"{reader} ({level})"


def _level_rank(level: str) -> int:
    return READER_LEVELS.index(level) if level in READER_LEVELS else len(READER_LEVELS)


def reader_summary(reader_table: pd.DataFrame, band: stats.RocBand | None = None) -> pd.DataFrame:
    """One row per reader: reader, reader_level, n, tp, fp, tn, fn, sensitivity, specificity,
    accuracy and, with a `band`, outside_band (`stats.outside_band`). Readers in the paper's
    level order (junior, attending, senior, then others), then by name.

    `reader_table`: one row per (image, reader) with columns reader, reader_level, y_true, call.
    """
    _require_columns(reader_table, ("reader", "reader_level", "y_true", "call"), "reader table")
    rows = []
    for (reader, level), calls in reader_table.groupby(["reader", "reader_level"], sort=False):
        (tn, fp), (fn, tp) = confusion_counts(calls["y_true"], calls["call"])
        sensitivity = tp / (tp + fn) if tp + fn else float("nan")
        specificity = tn / (tn + fp) if tn + fp else float("nan")
        row = {"reader": str(reader), "reader_level": str(level), "n": int(len(calls)),
               "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
               "sensitivity": float(sensitivity), "specificity": float(specificity),
               "accuracy": float((tp + tn) / len(calls))}
        if band is not None:
            row["outside_band"] = (bool(stats.outside_band(sensitivity, specificity, band))
                                   if np.isfinite(sensitivity) and np.isfinite(specificity)
                                   else False)
        rows.append(row)
    summary = pd.DataFrame(rows)
    order = sorted(range(len(summary)), key=lambda i: (_level_rank(summary["reader_level"][i]),
                                                       summary["reader"][i]))
    return summary.iloc[order].reset_index(drop=True)


# ----------------------------------------------------------------------------- Figure 3 panels


def draw_roc_curves(ax, test_scores: pd.DataFrame, thresholds: Mapping[str, float], *,
                    n_boot: int = 1000, seed: int = 0,
                    order: Sequence[str] | None = None) -> pd.DataFrame:
    """ROC curve per model (column `model`) with AUROC (bootstrap 95% CI) in the legend,
    each model's operating point at `thresholds[model]`, and the dotted chance line.

    `test_scores`: one row per (model, image) with columns model, y_true, score.
    Returns one row per model: model, n, auc, auc_lo, auc_hi, threshold, fpr, tpr.
    """
    from sklearn.metrics import roc_curve

    _require_columns(test_scores, ("model", "y_true", "score"), "test scores")
    models = list(order) if order is not None else list(dict.fromkeys(test_scores["model"]))
    rows = []
    for index, model in enumerate(models):
        part = test_scores[test_scores["model"] == model]
        if part.empty:
            raise ValueError(f"test scores hold no rows for model {model!r}")
        if model not in thresholds:
            raise ValueError(f"no operating threshold for model {model!r}")
        truth = _binary(part["y_true"].to_numpy(), f"y_true of {model}")
        score = part["score"].to_numpy(dtype=float)
        auc, lo, hi = stats.auc_ci(truth, score, n_boot=n_boot, seed=seed)
        fpr, tpr, _ = roc_curve(truth, score)
        colour = _MODEL_COLOURS[index % len(_MODEL_COLOURS)]
        ax.plot(fpr, tpr, color=colour, lw=2.2 if index == 0 else 1.6,
                label=f"{model}: AUC {auc:.2f} ({lo:.2f}\u2013{hi:.2f})")
        op_fpr, op_tpr = operating_point(truth, score, float(thresholds[model]))
        ax.plot([op_fpr], [op_tpr], marker="o", ms=7, mfc=colour, mec="black", mew=0.8,
                ls="none", zorder=5, clip_on=False)
        rows.append({"model": model, "n": int(truth.size), "auc": auc, "auc_lo": lo,
                     "auc_hi": hi, "threshold": float(thresholds[model]), "fpr": op_fpr,
                     "tpr": op_tpr})
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1.4, label="chance (AUC 0.50)")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="o", ls="none", mfc="white", mec="black", ms=7))
    labels.append("operating point (training-set threshold)")
    ax.legend(handles, labels, loc="lower right",
              title=f"AUC (95% CI, {n_boot} stratified bootstrap replicates)",
              title_fontsize=8.5, frameon=True, framealpha=0.9)
    _roc_axes(ax)
    return pd.DataFrame(rows)


def _roc_axes(ax) -> None:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 \u2212 specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.grid(True, color="0.9", lw=0.6)


def draw_confusion(ax, counts: np.ndarray, *, title: str, vmax: float | None = None,
                   labels: Sequence[str] = CLASS_LABELS, xlabel: str = "predicted",
                   ylabel: str = "gold standard", fontsize: float = 11.0,
                   show_share: bool = True, title_loc: str = "center",
                   title_weight: str = "normal"):
    """A 2x2 confusion matrix as counts (and row share) in `CONFUSION_CMAP`; returns the image
    so the caller can add a colour bar. `vmax` fixes the colour scale (shared panels)."""
    counts = np.asarray(counts)
    if counts.shape != (2, 2):
        raise ValueError(f"counts must be 2x2, got shape {counts.shape}")
    top = float(vmax) if vmax is not None else float(max(counts.max(), 1))
    image = ax.imshow(counts, cmap=CONFUSION_CMAP, vmin=0, vmax=top)
    cmap = matplotlib.colormaps[CONFUSION_CMAP]
    for (row, col), value in np.ndenumerate(counts):
        row_total = counts[row].sum()
        text = f"{int(value)}"
        if show_share and row_total:
            text += f"\n({value / row_total:.0%})"
        shade = cmap(value / top if top else 0.0)
        luminance = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2]
        ax.text(col, row, text, ha="center", va="center", fontsize=fontsize,
                color="white" if luminance < 0.5 else "black")
    ax.set_xticks([0, 1], labels)
    ax.set_yticks([0, 1], labels, rotation=90, va="center")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc=title_loc, fontweight=title_weight)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return image


def draw_model_vs_readers(ax, reader_table: pd.DataFrame, *, model: str, threshold: float,
                          band_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """The model's ROC on the readers' images with its bootstrap 95% CI band and each
    reader's (1 - specificity, sensitivity): filled inside the band, hollow outside.

    `reader_table`: one row per (image, reader): image_path, y_true, score (the model's),
    reader, reader_level, call. Returns `reader_summary(..., band)`.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    _require_columns(reader_table, ("image_path", "y_true", "score", "reader", "reader_level",
                                    "call"), "reader table")
    images = reader_table.drop_duplicates("image_path")
    truth = _binary(images["y_true"].to_numpy(), "y_true")
    score = images["score"].to_numpy(dtype=float)
    band = stats.roc_ci_band(truth, score, n_boot=band_boot, seed=seed)
    ax.fill_between(1.0 - band.specificity, band.lower, band.upper, color="#c0392b",
                    alpha=0.18, lw=0, label=f"{model} 95% CI band ({band_boot} bootstrap)")
    fpr, tpr, _ = roc_curve(truth, score)
    ax.plot(fpr, tpr, color="#c0392b", lw=2.0,
            label=f"{model} ROC on these images (AUC {roc_auc_score(truth, score):.2f})")
    op_fpr, op_tpr = operating_point(truth, score, threshold)
    ax.plot([op_fpr], [op_tpr], marker="*", ms=13, mfc="#c0392b", mec="black", mew=0.8,
            ls="none", zorder=6, clip_on=False,
            label=f"{model} at its threshold: sens {op_tpr:.2f}, spec {1 - op_fpr:.2f}")
    summary = reader_summary(reader_table, band)
    for row in summary.itertuples():
        colour = _READER_COLOURS.get(row.reader_level, "0.3")
        outside = bool(row.outside_band)
        name = reader_name(row.reader, row.reader_level)
        ax.plot([1.0 - row.specificity], [row.sensitivity],
                marker=_MARKERS.get(row.reader_level, "D"), ms=9, ls="none", zorder=7,
                clip_on=False,
                mfc="white" if outside else colour, mec=colour, mew=2.0,
                label=f"{name}: sens {row.sensitivity:.2f}, spec {row.specificity:.2f} "
                      f"({'outside' if outside else 'inside'} band)")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1.2)
    ax.legend(loc="lower right", frameon=True, framealpha=0.9,
              title="filled: inside the band, hollow: outside", title_fontsize=8)
    _roc_axes(ax)
    return summary


def _no_readers_panel(ax, message: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=10,
            transform=ax.transAxes)


# ----------------------------------------------------------------------------- Figure 3


def figure3(test_scores: pd.DataFrame, thresholds: Mapping[str, float],
            reader_table: pd.DataFrame | None, *, model: str = "Pgds-ResNet",
            title: str = "", n_boot: int = 1000, band_boot: int = 200, seed: int = 0,
            readers_note: str = "", no_readers_message: str = "no reader study") -> Figure:
    """Tang 2023 Figure 3 (panels a-d); see the module docstring.

    `test_scores`: model, y_true, score per test image (`model` values are display names;
    `model` names the studied one). `thresholds`: display name -> operating threshold.
    `reader_table`: image_path, y_true, score (the model's), reader, reader_level, call -- or
    None when there is no reader study (panels c and d then say `no_readers_message`).
    """
    with matplotlib.rc_context(STYLE):
        figure = _new_figure(13.5, 12.4)
        top, bottom = figure.subfigures(2, 1, height_ratios=[1.0, 1.0], hspace=0.02)
        panel_a, panel_b = top.subfigures(1, 2, width_ratios=[1.15, 1.0])
        panel_c, panel_d = bottom.subfigures(1, 2, width_ratios=[1.15, 1.0])

        ax_a = panel_a.subplots()
        n_test = int(test_scores.loc[test_scores["model"] == model].shape[0])
        ax_a.set_title(f"a   ROC curves, test split (n = {n_test} images)", loc="left",
                       fontweight="bold")
        others = [m for m in dict.fromkeys(test_scores["model"]) if m != model]
        draw_roc_curves(ax_a, test_scores, thresholds, n_boot=n_boot, seed=seed,
                        order=[model] + others)

        ax_b = panel_b.subplots()
        studied = test_scores[test_scores["model"] == model]
        calls = (studied["score"].to_numpy(dtype=float) >= float(thresholds[model])).astype(int)
        counts = confusion_counts(studied["y_true"].to_numpy(), calls)
        image = draw_confusion(ax_b, counts, fontsize=13,
                               title=f"b   {model}, test split, threshold "
                                     f"{float(thresholds[model]):.3g}",
                               xlabel=f"{model} call", ylabel="gold standard",
                               title_loc="left", title_weight="bold")
        bar = panel_b.colorbar(image, ax=ax_b, shrink=0.75)
        bar.set_label("images")

        if reader_table is None or reader_table.empty:
            _no_readers_panel(panel_c.subplots(), no_readers_message)
            _no_readers_panel(panel_d.subplots(), no_readers_message)
        else:
            ax_c = panel_c.subplots()
            n_images = reader_table["image_path"].nunique()
            note = f"; {readers_note}" if readers_note else ""
            ax_c.set_title(f"c   {model} versus readers\n"
                           + _wrap(f"{n_images} test images{note}", 62),
                           loc="left", fontweight="bold")
            readers = draw_model_vs_readers(ax_c, reader_table, model=model,
                                            threshold=float(thresholds[model]),
                                            band_boot=band_boot, seed=seed)
            _reader_confusions(panel_d, reader_table, readers, model=model,
                               threshold=float(thresholds[model]), note=readers_note)
        _suptitle(figure, title, 12, fontweight="bold")
    return figure


def _reader_confusions(panel, reader_table: pd.DataFrame, readers: pd.DataFrame, *,
                       model: str, threshold: float, note: str) -> None:
    images = reader_table.drop_duplicates("image_path")
    model_calls = (images["score"].to_numpy(dtype=float) >= threshold).astype(int)
    matrices = [(model, confusion_counts(images["y_true"].to_numpy(), model_calls))]
    for row in readers.itertuples():
        part = reader_table[(reader_table["reader"] == row.reader)
                            & (reader_table["reader_level"] == row.reader_level)]
        name = reader_name(row.reader, row.reader_level)
        matrices.append((name, confusion_counts(part["y_true"].to_numpy(),
                                                part["call"].to_numpy())))
    columns = 2 if len(matrices) <= 4 else 3
    rows = int(np.ceil(len(matrices) / columns))
    axes = np.atleast_1d(panel.subplots(rows, columns)).ravel()
    vmax = max(float(m.max()) for _, m in matrices)
    image = None
    for index, (ax, (name, counts)) in enumerate(zip(axes, matrices)):
        accuracy = np.trace(counts) / counts.sum()
        image = draw_confusion(ax, counts, title=f"{name}\naccuracy {accuracy:.2f}", vmax=vmax,
                               labels=("normal", "genetic\ndisease"), fontsize=10,
                               xlabel="call" if index // columns == rows - 1 else "",
                               ylabel="gold standard" if index % columns == 0 else "")
        ax.title.set_fontsize(10)
    for ax in axes[len(matrices):]:
        ax.set_axis_off()
    bar = panel.colorbar(image, ax=list(axes), shrink=0.6)
    bar.set_label("images")
    n_images = len(images)
    suffix = f"; {note}" if note else ""
    panel.suptitle("d   confusion matrices on the readers' images\n"
                   + _wrap(f"{n_images} test images{suffix}", 62), x=0.02, ha="left",
                   fontweight="bold", fontsize=11)


# ----------------------------------------------------------------------------- Figure 4


@dataclass(frozen=True)
class HeatmapExample:
    """One image of Figure 4: the frame to show, its heat-map and an optional truth mask.

    `image`: (H, W) grey, uint8 or float in [0, 1]. `heat`: (h, w) in [0, 1] (resized
    bilinearly to the frame when its size differs: the model saw the whole frame resized).
    `mask`: (H, W) truth mask at the frame's size, outlined on the heat-map panel.
    `heat_title`: the heat-map panel's title (e.g. which class the map explains).
    """

    group: str
    image: np.ndarray
    heat: np.ndarray
    caption: str
    mask: np.ndarray | None = None
    heat_title: str = "Grad-CAM"


def figure4(examples: Sequence[HeatmapExample], *, title: str = "", alpha: float = 0.4,
            per_row: int = 2, panel_inches: float = 1.8,
            interpolation: str = "nearest", method_title: str = "Grad-CAM") -> Figure:
    """Rows of (original, heat-map overlay) pairs, one row per group in `GROUP_ORDER`
    (unknown groups after them), at most `per_row` examples per row; one colour bar labelled
    with `method_title` (Grad-CAM, LayerCAM, ...)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from reproduce.gradcam import overlay

    if not examples:
        raise ValueError("figure4 needs at least one example")
    groups: dict[str, list[HeatmapExample]] = {}
    for example in examples:
        groups.setdefault(example.group, []).append(example)
    ordered = [g for g in GROUP_ORDER if g in groups] + [g for g in groups if g not in GROUP_ORDER]
    first = np.asarray(examples[0].image)
    aspect = first.shape[0] / first.shape[1]
    columns = 2 * per_row
    with matplotlib.rc_context(STYLE):
        figure = _new_figure(columns * panel_inches + 1.4,
                             len(ordered) * (panel_inches * aspect + 0.42) + 0.9)
        axes = np.atleast_2d(figure.subplots(len(ordered), columns))
        for row, group in enumerate(ordered):
            for slot in range(per_row):
                ax_image, ax_heat = axes[row, 2 * slot], axes[row, 2 * slot + 1]
                for ax in (ax_image, ax_heat):
                    ax.set_xticks([])
                    ax.set_yticks([])
                    for spine in ax.spines.values():
                        spine.set_visible(False)
                if slot >= len(groups[group]):
                    ax_image.set_axis_off()
                    ax_heat.set_axis_off()
                    continue
                example = groups[group][slot]
                gray = np.asarray(example.image)
                top = 255 if gray.dtype == np.uint8 else 1
                ax_image.imshow(gray, cmap="gray", vmin=0, vmax=top, interpolation=interpolation)
                ax_heat.imshow(overlay(gray, example.heat, alpha=alpha, cmap=HEATMAP_CMAP),
                               interpolation=interpolation)
                if example.mask is not None and np.asarray(example.mask).any():
                    ax_heat.contour(np.asarray(example.mask) > 0, levels=[0.5], colors="white",
                                    linewidths=1.1, linestyles="--")
                ax_image.set_title(f"A  {example.caption}", fontsize=8, loc="left")
                ax_heat.set_title(f"B  {example.heat_title}", fontsize=8, loc="left")
            axes[row, 0].set_ylabel(GROUP_NAMES.get(group, group), fontsize=10)
        bar = figure.colorbar(ScalarMappable(Normalize(0, 1), cmap=HEATMAP_CMAP),
                              ax=list(axes.ravel()), shrink=0.5, pad=0.02)
        bar.set_label(f"{method_title} importance (normalised per image)")
        _suptitle(figure, title, 10)
    return figure


# ----------------------------------------------------------------------------- Figure S1


def _violin_groups(table: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    groups = [("normal", table.loc[table["label"] == "normal", "gestational_week"]),
              ("genetic disease\n(all)", table.loc[table["label"] != "normal", "gestational_week"])]
    if "subtype" in table.columns:
        for subtype in GROUP_ORDER[:-1]:
            values = table.loc[table["subtype"] == subtype, "gestational_week"]
            if len(values):
                groups.append((subtype, values))
    return [(name, np.asarray(values, dtype=float)) for name, values in groups if len(values)]


def figure_s1(table: pd.DataFrame, *, title: str = "", caption: str = "",
              reference: tuple[float, str] | None = None) -> Figure:
    """Violins of gestational week by class (normal, genetic disease) and by subtype, each
    with n and mean ± SD above it; `caption` is printed above the axes; `reference`
    (week, label) draws a dashed horizontal line (e.g. the paper's mean)."""
    _require_columns(table, ("label", "gestational_week"), "manifest")
    weeks = pd.to_numeric(table["gestational_week"], errors="coerce")
    if weeks.isna().any():
        raise ValueError(f"gestational_week has {int(weeks.isna().sum())} missing or "
                         "non-numeric value(s)")
    table = table.assign(gestational_week=weeks)
    groups = _violin_groups(table)
    positions = np.arange(1, len(groups) + 1, dtype=float)
    colours = ["#2471a3", "#c0392b"] + ["#e6a09a"] * (len(groups) - 2)
    with matplotlib.rc_context(STYLE):
        figure = _new_figure(max(6.5, 1.25 * len(groups) + 1.5), 5.4)
        ax = figure.subplots()
        parts = ax.violinplot([values for _, values in groups], positions=positions,
                              showextrema=False, widths=0.8)
        for body, colour in zip(parts["bodies"], colours):
            body.set_facecolor(colour)
            body.set_edgecolor("black")
            body.set_linewidth(0.6)
            body.set_alpha(0.75)
        top = max(values.max() for _, values in groups)
        bottom = min(values.min() for _, values in groups)
        for position, (name, values) in zip(positions, groups):
            q1, median, q3 = np.percentile(values, [25, 50, 75])
            ax.vlines(position, q1, q3, color="black", lw=4)
            ax.plot(position, median, marker="o", color="white", ms=4, zorder=3)
            ax.vlines(position, values.min(), values.max(), color="black", lw=0.8)
            sd = values.std(ddof=1) if values.size > 1 else float("nan")
            ax.text(position, top + 0.6, f"n = {values.size}\n{values.mean():.1f} \u00b1 {sd:.1f}",
                    ha="center", va="bottom", fontsize=9)
        if len(groups) > 2:
            ax.axvline(2.5, color="0.6", lw=0.8, ls="--")
        if reference is not None:
            ax.axhline(reference[0], color="#7d3c98", lw=1.0, ls="--", label=reference[1])
            ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.86), frameon=False)
        ax.set_xticks(positions, [name for name, _ in groups])
        ax.set_ylabel("gestational age (weeks)")
        ax.set_xlabel("class  |  genetic-disease subtype")
        ax.set_ylim(bottom - 1.0, top + 3.2)
        ax.grid(True, axis="y", color="0.9", lw=0.6)
        if caption:
            ax.set_title(caption, fontsize=9, loc="left")
        _suptitle(figure, title, 11)
    return figure


# ----------------------------------------------------------------------------- Figure S2


def figure_s2(image: np.ndarray, *, seed: int = 0, title: str = "", note: str = "",
              display_width: int = 220, panel_inches: float = 2.2) -> Figure:
    """The original frame and one panel per augmentation method of `data_prep.augment`, drawn
    with the transforms `data_prep.augment.figure_s2` draws for the same `seed` (applied at
    full resolution). Panels are shown at most `display_width` pixels wide (cv2.INTER_AREA)
    so the PNG stays small; `note` fills the eighth panel."""
    import cv2

    from data_prep.augment import FIGURE_TITLES, METHODS, apply_transform, sample_transform

    pixels = np.asarray(image)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D grey frame, got shape {pixels.shape}")
    low, high = float(pixels.min()), float(pixels.max())
    panels = [("original", pixels)]
    for index, method in enumerate(METHODS):
        transform = sample_transform(method, pixels.shape, np.random.default_rng([seed, index]))
        name = FIGURE_TITLES[method]
        if method == "combination":
            name += "\n(" + " + ".join(FIGURE_TITLES[p] for p in transform.parts) + ")"
        panels.append((name, apply_transform(pixels, transform)))
    height, width = pixels.shape
    if width > display_width:
        size = (display_width, max(1, round(height * display_width / width)))
        panels = [(name, cv2.resize(panel, size, interpolation=cv2.INTER_AREA))
                  for name, panel in panels]
    aspect = height / width
    with matplotlib.rc_context(STYLE):
        figure = _new_figure(4 * panel_inches, 2 * (0.9 * panel_inches * aspect + 0.4) + 0.6)
        axes = figure.subplots(2, 4)
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, (name, panel) in zip(axes.flat, panels):
            ax.imshow(panel, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            ax.set_title(name, fontsize=10)
        if note:
            import textwrap

            wrapped = "\n".join(textwrap.fill(part, 34) for part in note.split("\n"))
            axes.flat[-1].text(0.04, 0.5, wrapped, ha="left", va="center", fontsize=8.5,
                               transform=axes.flat[-1].transAxes)
        _suptitle(figure, title, 10.5)
    return figure
