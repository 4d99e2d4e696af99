"""Hong 2021's Table 2 and Figure 4: the face VGG-16 over five folds beside five paediatricians.

    python -m reproduce gs_vgg16 tables --profile default [--readers R.csv] [--only table2,figure4]

Writes into the results folder (every .md ends with the data label, folds and recipe):
- `table2.csv/.md`: accuracy, sensitivity (recall), specificity, precision, F1 and AUC of the
  model as mean +- SD (sample SD) over the five test folds, beside Hong 2021's model row and
  the five paediatricians (a reader CSV, or simulated at Hong's Table 2 sensitivity and
  specificity on the pooled test children, labelled "simulated"); `table2_folds.csv` holds the
  per-fold values.
- `figure4.png`: ROC of the pooled out-of-fold test scores with the 95 % CI band of 200
  stratified bootstrap replicates (pROC `ci.se`, Hong's method; reproduce.stats.roc_ci_band),
  each fold's curve, and each paediatrician's (1 - specificity, sensitivity) point marked
  inside or outside the band (Hong: outside = different from the model).
- `face_detection.csv/.md` (phantom only; a user's manifest lists crops already aligned): how
  often MTCNN found the face, per class and per syndrome, with the Wilson 95 % interval, and
  how often the phantom's drawn landmarks stood in (data_prep.faces `landmarks_fallback`).
  A detector that misses one class more than the other is a shortcut the model can learn
  from the fallback crops, so the two rates are tested against each other (Fisher's exact).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np
import pandas as pd

from data_prep.errors import InputError
from reproduce import stats, study
from reproduce.gs_vgg16 import pipeline
from reproduce.paper_values import HONG2021, HONG2021_READERS

OUTPUTS = ("table2", "figure4", "face_detection")
PAPER_KEYS = {"accuracy": "accuracy", "sensitivity": "recall", "specificity": "specificity",
              "precision": "precision", "f1": "f1", "auc": "auc"}
READER_COLUMNS = ("case_id", "reader", "call")


# ----------------------------------------------------------------------------- readers


def simulated_readers(test: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Five paediatricians' calls on the pooled test children, each drawn at Hong 2021's Table
    2 sensitivity and specificity for that reader (one Bernoulli draw per child; seeded)."""
    children = test.drop_duplicates("case_id")
    rows = []
    for number, (reader, rates) in enumerate(HONG2021_READERS.items()):
        rng = np.random.default_rng([seed, 2021, number])
        draws = rng.random(len(children))
        positive = children["y_true"].to_numpy(int) == 1
        calls = np.where(positive, draws < rates["sensitivity"], draws >= rates["specificity"])
        rows.append(pd.DataFrame({"case_id": children["case_id"].astype(str).to_numpy(),
                                  "reader": reader, "call": calls.astype(int)}))
    return pd.concat(rows, ignore_index=True)


def user_readers(path, test: pd.DataFrame) -> pd.DataFrame:
    """A reader CSV (case_id, reader, call 0/1) restricted to the test children, checked."""
    frame = study.read_user_csv(path, "reader CSV")
    missing = [c for c in READER_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(path, f"reader CSV lacks column(s) {', '.join(missing)} (needs "
                         f"{', '.join(READER_COLUMNS)})")
    for row, value in enumerate(frame["call"], start=1):
        if value not in ("0", "1"):
            raise InputError(path, f"call must be 0 or 1, got {value!r}", row=row, column="call")
    known = set(test["case_id"].astype(str))
    unknown = frame.loc[~frame["case_id"].isin(known), "case_id"]
    if len(unknown):
        row = int(unknown.index[0]) + 1
        raise InputError(path, f"case_id {unknown.iloc[0]!r} is not a test child of any fold",
                         row=row, column="case_id")
    frame["call"] = frame["call"].astype(int)
    return frame[list(READER_COLUMNS)]


def reader_rates(readers: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """One row per reader: the Table 2 rates of their calls (no AUC: a call has no score)."""
    truth = test.drop_duplicates("case_id").set_index("case_id")["y_true"]
    rows = []
    for reader, part in readers.groupby("reader", sort=False):
        y_true = truth.loc[part["case_id"].astype(str)].to_numpy(int)
        rows.append({"reader": str(reader), "n": len(part),
                     **pipeline.call_rates(y_true, part["call"].to_numpy(int))})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- Table 2


def table2(ctx: pipeline.StudyContext, test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Table 2 rows, per-fold metrics)."""
    per_fold = pipeline.fold_metrics(test)
    summary = stats.cv_summary({m: per_fold[m].tolist() for m in pipeline.METRICS})
    rows = [{"row": "VGG-16 (reproduced)", "source": study.results_label(ctx),
             **{m: summary[m]["mean"] for m in pipeline.METRICS},
             **{f"{m}_sd": summary[m]["sd"] for m in pipeline.METRICS}},
            {"row": "VGG-16 (Hong 2021)", "source": "paper",
             **{m: HONG2021[PAPER_KEYS[m]]["mean"] for m in pipeline.METRICS},
             **{f"{m}_sd": HONG2021[PAPER_KEYS[m]]["sd"] for m in pipeline.METRICS}}]
    simulated = ctx.readers is None
    readers = simulated_readers(test, ctx.seed) if simulated else user_readers(ctx.readers, test)
    for rates in reader_rates(readers, test).to_dict("records"):
        source = ("simulated at Hong 2021's rates on the phantom's test children" if simulated
                  else f"reader CSV ({rates['n']} children)")
        rows.append({"row": rates["reader"] + (" (simulated)" if simulated else ""),
                     "source": source, **{m: rates.get(m, np.nan) for m in pipeline.METRICS}})
        if simulated:
            paper = HONG2021_READERS[rates["reader"]]
            rows.append({"row": f"{rates['reader']} (Hong 2021)", "source": "paper",
                         **{m: paper.get(m, np.nan) for m in pipeline.METRICS}})
    return pd.DataFrame(rows), per_fold


def table2_markdown(ctx: pipeline.StudyContext, frame: pd.DataFrame, per_fold: pd.DataFrame) -> str:
    def cell(row, metric):
        value, sd = row[metric], row.get(f"{metric}_sd", np.nan)
        if not np.isfinite(value):
            return "–"
        return f"{value:.4f} ± {sd:.4f}" if np.isfinite(sd) else f"{value:.4f}"

    shown = pd.DataFrame([{"": row["row"], **{pipeline.METRIC_TITLES[m]: cell(row, m)
                                              for m in pipeline.METRICS}}
                          for row in frame.to_dict("records")])
    folds = ", ".join(f"fold {int(r['fold'])}: accuracy {r['accuracy']:.3f}, AUC {r['auc']:.3f} "
                      f"({int(r['n'])} children)" for r in per_fold.to_dict("records"))
    return "\n".join([
        f"# Table 2 (Hong 2021): VGG-16 and paediatricians -- {study.results_label(ctx)}", "",
        study.markdown_table(shown), "",
        "Model rows: mean ± SD (sample SD) over the five test folds; paediatricians: one "
        "reading of the pooled test children (no AUC: a call has no score). "
        + ("The paediatrician rows are SIMULATED: each child called at the sensitivity and "
           "specificity Hong 2021 reports for that reader, so they show sampling spread around "
           "the paper's rates, not real readers." if ctx.readers is None else
           f"Readers from {ctx.readers.name}."),
        f"Per fold: {folds}.", "",
        *pipeline.common_notes(ctx)])


# ----------------------------------------------------------------------------- Figure 4


def figure4(ctx: pipeline.StudyContext, test: pd.DataFrame, readers: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    y_true, score = test["y_true"].to_numpy(int), test["score"].to_numpy(float)
    band = stats.roc_ci_band(y_true, score, n_boot=ctx.n_boot, seed=ctx.seed)
    fig, ax = plt.subplots(figsize=(6.4, 6.0))
    for fold, part in test.groupby("fold", sort=True):
        fpr, tpr, _ = roc_curve(part["y_true"], part["score"])
        ax.plot(fpr, tpr, color="0.75", lw=0.8, label="each test fold" if fold == 0 else None)
    ax.fill_between(1 - band.specificity, band.lower, band.upper, color="tab:blue", alpha=0.2,
                    label=f"95 % CI ({band.n_boot} bootstrap replicates)")
    ax.plot(1 - band.specificity, band.sensitivity, color="tab:blue", lw=2,
            label=f"VGG-16, pooled out-of-fold (AUC {roc_auc_score(y_true, score):.3f})")
    for rates in reader_rates(readers, test).to_dict("records"):
        outside = stats.outside_band(rates["sensitivity"], rates["specificity"], band)
        ax.scatter(1 - rates["specificity"], rates["sensitivity"], s=50,
                   marker="o" if outside else "x", color="tab:red" if outside else "black",
                   zorder=3, label=f"{rates['reader']}: {'outside' if outside else 'inside'} "
                                   "the band")
    ax.plot([0, 1], [0, 1], ls=":", color="0.5")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
    simulated = " (paediatricians simulated at Hong 2021's rates)" if ctx.readers is None else ""
    ax.set_title(f"Figure 4 (Hong 2021): ROC with 95 % CI band{simulated}\n"
                 f"{study.results_label(ctx)}", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- detection


DETECTION_COLUMNS = ("group", "kind", "photos", "mtcnn_found", "landmarks_fallback",
                     "not_aligned", "found_rate", "found_ci_low", "found_ci_high")


def face_detection(ctx: pipeline.StudyContext) -> pd.DataFrame | None:
    """MTCNN's detection rate per class and per syndrome on the prepared phantom (rows of
    DETECTION_COLUMNS), None when the data did not pass through detection (a user's manifest
    of aligned crops)."""
    from statsmodels.stats.proportion import proportion_confint

    from data_prep.faces import DETECTIONS_CSV

    data = study.data_dir(ctx)
    detections_path = data / "deidentified" / DETECTIONS_CSV
    raw_manifest = data / "phantom_raw" / "manifest.csv"
    if not ctx.is_phantom or not detections_path.is_file() or not raw_manifest.is_file():
        return None
    detections = pd.read_csv(detections_path, keep_default_na=False)
    raw = pd.read_csv(raw_manifest, dtype=str, keep_default_na=False)
    if len(raw) != len(detections):
        raise InputError(detections_path, f"{len(detections)} rows for the {len(raw)} photos of "
                         f"{raw_manifest}: prepare again (--force)")
    photos = raw.assign(status=detections.sort_values("row")["status"].to_numpy())
    groups = [("class", name, photos[photos["label"] == name]) for name in pipeline.CLASS_NAMES]
    syndromic = photos[photos["label"] == pipeline.POSITIVE_LABEL]
    groups += [("syndrome", name, part) for name, part in
               sorted(syndromic.groupby("subtype"), key=lambda item: (-len(item[1]), item[0]))]
    groups.append(("all", "all photos", photos))
    rows = []
    for kind, name, part in groups:
        found = int((part["status"] == "ok").sum())
        fallback = int((part["status"] == "landmarks_fallback").sum())
        low, high = proportion_confint(found, len(part), alpha=0.05, method="wilson")
        rows.append({"group": name, "kind": kind, "photos": len(part), "mtcnn_found": found,
                     "landmarks_fallback": fallback,
                     "not_aligned": len(part) - found - fallback,
                     "found_rate": found / len(part), "found_ci_low": float(low),
                     "found_ci_high": float(high)})
    return pd.DataFrame(rows, columns=list(DETECTION_COLUMNS))


def face_detection_markdown(ctx: pipeline.StudyContext, frame: pd.DataFrame) -> str:
    from scipy.stats import fisher_exact

    from data_prep.faces import MIN_CONFIDENCE, MIN_FACE_PX

    classes = frame[frame["kind"] == "class"].set_index("group")
    table = [[int(classes.loc[name, "mtcnn_found"]),
              int(classes.loc[name, "photos"] - classes.loc[name, "mtcnn_found"])]
             for name in pipeline.CLASS_NAMES]
    p_value = float(fisher_exact(table).pvalue)
    shown = frame.assign(found=[f"{r.mtcnn_found}/{r.photos} ({r.found_rate:.3f}; "
                                f"{r.found_ci_low:.3f}-{r.found_ci_high:.3f})"
                                for r in frame.itertuples()])
    shown = shown[["kind", "group", "found", "landmarks_fallback", "not_aligned"]]
    return "\n".join([
        f"# Face detection on the phantom (MTCNN) -- {study.results_label(ctx)}", "",
        study.markdown_table(shown.rename(columns={
            "found": "MTCNN found (rate; Wilson 95 % CI)",
            "landmarks_fallback": "drawn landmarks used", "not_aligned": "not aligned"})), "",
        f"- Found: one face with confidence >= {MIN_CONFIDENCE:.2f} and a box of at least "
        f"{MIN_FACE_PX} px (data_prep.faces; the photo is then aligned by MTCNN's five points). "
        "Elsewhere the phantom's drawn landmarks align the face (`--landmarks fallback`), so "
        "no child is lost; a user's photos have no such fallback and are reported instead.",
        f"- Healthy vs syndromic found rate: Fisher's exact test p = {p_value:.3g} (a large "
        "difference would let the model learn which crops came from the fallback).",
        f"- Photos: one per child, {int(frame.loc[frame['kind'] == 'all', 'photos'].iloc[0])} "
        f"in all, at the {ctx.profile} profile's size."])


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce gs_vgg16 tables",
                                     description="Hong 2021 Table 2 and Figure 4.")
    pipeline.add_common_args(parser)
    parser.add_argument("--only", default=",".join(OUTPUTS),
                        help=f"comma-separated subset of {', '.join(OUTPUTS)}")
    return parser


def run(args: argparse.Namespace) -> int:
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in OUTPUTS]
    if unknown:
        raise InputError(None, f"--only: unknown output '{unknown[0]}' (choose from "
                               f"{', '.join(OUTPUTS)})")
    ctx = pipeline.context_from_args(args)
    study.check_results_dir(ctx)
    test = study.test_rows(ctx, pipeline.ARCH) if {"table2", "figure4"} & set(only) else None
    if "table2" in only:
        frame, per_fold = table2(ctx, test)
        study.write_table(ctx, "table2", frame, table2_markdown(ctx, frame, per_fold))
        study.write_table(ctx, "table2_folds", per_fold, study.markdown_table(per_fold))
    if "figure4" in only:
        readers = (simulated_readers(test, ctx.seed) if ctx.readers is None
                   else user_readers(ctx.readers, test))
        study.write_figure(ctx, "figure4", figure4(ctx, test, readers))
    if "face_detection" in only:
        frame = face_detection(ctx)
        if frame is None:
            pipeline.say("face_detection: skipped (the manifest lists aligned crops; "
                         "`python -m data_prep faces` reports detection for your photos)")
        else:
            study.write_table(ctx, "face_detection", frame, face_detection_markdown(ctx, frame))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return study.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
