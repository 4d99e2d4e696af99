"""CNS headline numbers (reproduce/cns/headline.py) and the shared seeds runner
(reproduce/seeds.py) on hand-made result tables: no training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep.errors import InputError
from reproduce import seeds, stats
from reproduce.cns import headline, pipeline
from reproduce.cns import seeds as cns_seeds


def write_tables(folder: Path, shift: float = 0.0, hits=(True, True, False, True)) -> None:
    """accuracy.csv for both tasks and the 5-class localisation table, as cns all writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in pipeline.TASK_NAMES:
        for k, metric in enumerate(headline.ACCURACY_METRICS):
            value = 0.7 + 0.05 * k + shift + (0.01 if task == "5class" else 0.0)
            rows.append({"task": task, "metric": metric, "value": value, "ci_lo": value - 0.05,
                         "ci_hi": value + 0.05, "n": 100, "ci": "Wilson"})
    pd.DataFrame(rows).to_csv(folder / "accuracy.csv", index=False)
    pd.DataFrame({"label": ["anencephaly"] * 5, "correct": [True, True, True, True, False],
                  "pointing_game_hit": [*hits, True], "chance_hit": [0.2, 0.3, 0.4, 0.5, 0.9],
                  "energy_inside": [0.5, 0.5, 0.1, 0.3, 0.0]}
                 ).to_csv(folder / "gradcam_localisation_5class.csv", index=False)


def test_headline_reads_accuracy_and_the_pointing_game_on_correct_images(tmp_path):
    write_tables(tmp_path)
    frame = headline.build_headline(tmp_path).set_index("task")
    assert list(frame.index) == ["4class", "5class"]
    assert frame.loc["4class", "macro_auroc"] == pytest.approx(0.9)
    assert frame.loc["5class", "macro_auroc_lo"] == pytest.approx(0.86)
    five = frame.loc["5class"]
    assert five["pointing_game_correct"] == pytest.approx(3 / 4)   # the wrong call is left out
    assert five["pointing_game_chance_correct"] == pytest.approx(0.35)
    assert five["energy_inside_correct"] == pytest.approx(0.35)
    _, lo, hi = stats.proportion_ci(3, 4, stats.PGDS_PROPORTION_CI)
    assert (five["pointing_game_correct_lo"], five["pointing_game_correct_hi"]) == (lo, hi)
    assert np.isnan(frame.loc["4class", "pointing_game_correct"])   # no localisation table


def test_headline_without_tables_names_the_missing_file(tmp_path):
    with pytest.raises(InputError, match="accuracy.csv"):
        headline.build_headline(tmp_path)


def test_every_target_is_a_headline_column():
    for task, metric in headline.TARGETS:
        assert task in pipeline.TASK_NAMES
        assert metric in (*headline.ACCURACY_METRICS, *headline.LOCALISATION)


def test_seeds_runs_each_seed_once_and_spreads_the_headline(tmp_path, monkeypatch):
    """Every seed's `all` runs into its own folders, a finished main run is not re-run, and the
    spread and the targets' verdicts are written beside the main results."""
    ctx = pipeline.StudyContext(profile="ci", seed=0, runs_dir=tmp_path / "runs",
                                results_dir=tmp_path / "results")
    calls = []

    def fake_all(argv):
        seed = int(argv[argv.index("--seed") + 1])
        results = Path(argv[argv.index("--results") + 1])
        calls.append((seed, Path(argv[argv.index("--runs") + 1]), results))
        write_tables(results, shift=0.01 * seed, hits=(True, True, seed == 2, True))
        record = {"config": {}, "outputs": {"headline": {}}}
        (results / "run.json").write_text(json.dumps(record))
        return 0

    spec = seeds.SeedStudy(**{**cns_seeds.SPEC.__dict__, "run_all": fake_all})
    monkeypatch.setattr(seeds.study, "check_results_dir", lambda ctx: None)
    written = {}
    monkeypatch.setattr(seeds.study, "write_table",
                        lambda ctx, name, table, md: written.update({name: (table, md)}))
    argv = ["--seed", "0", "--runs", str(ctx.runs_dir), "--results", str(ctx.results_dir)]
    assert seeds.run(ctx, spec, (0, 1, 2), argv) == 0
    assert [c[0] for c in calls] == [0, 1, 2]
    assert calls[2][1:] == (tmp_path / "runs" / "seed2", tmp_path / "results" / "seeds" / "seed2")
    spread, md = written["seed_spread"]
    row = spread[(spread["key"] == "4class") & (spread["metric"] == "macro_auroc")].iloc[0]
    assert row["mean"] == pytest.approx(0.91) and row["values"] == "0.9000;0.9100;0.9200"
    assert "5class pointing_game_correct >= 0.8: mean 0.833, worst seed 0.750 -- holds for the " \
           "mean, NOT for the worst seed" in md
    from reproduce import config as cfg

    assert f"float noise that {cfg.make_config('cns', pipeline.ARCH, 'ci').max_epochs} epochs of " \
           "training" in md   # the study's own training length, not Pgds's
    calls.clear()
    assert seeds.run(ctx, spec, (0, 1), argv) == 0   # seed 0 finished: reused, seed 1 re-run
    assert [c[0] for c in calls] == [1]
