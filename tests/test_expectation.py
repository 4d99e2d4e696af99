"""`python -m reproduce compare --expect`: a fresh run judged against the committed spread over
seeds (reproduce/expectation.py), the headline table and the seeds command's helpers."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reproduce import compare, expectation, seeds
from reproduce.pgds import headline


def test_expected_interval_is_a_prediction_interval():
    values = [0.98, 0.99, 0.97]
    lo, hi = expectation.expected_interval(values)
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) * math.sqrt(1 + 1 / 3)
    assert lo == pytest.approx(0.98 - half)
    assert hi == 1.0   # clipped: 0.98 + 0.0497 > 1


@pytest.mark.parametrize("values,lo,hi", [
    ([1.0, 1.0, 1.0], 0.98, 1.0),          # no spread: the floor of +-0.02
    ([0.5, 0.5], 0.48, 0.52),
    ([0.0, 0.01, 0.0], 0.0, None),          # clipped at 0
])
def test_expected_interval_floor_and_bounds(values, lo, hi):
    found_lo, found_hi = expectation.expected_interval(values)
    assert found_lo == pytest.approx(lo)
    if hi is not None:
        assert found_hi == pytest.approx(hi)
    assert found_lo <= min(values) and found_hi >= max(values)


def test_expected_interval_needs_two_seeds():
    with pytest.raises(ValueError):
        expectation.expected_interval([0.9])


def _headline(auroc_pgds: float, auroc_r34: float, pointing: float = 0.8) -> pd.DataFrame:
    return pd.DataFrame({"model": ["Pgds-ResNet", "ResNet-34"],
                         "auroc": [auroc_pgds, auroc_r34], "sensitivity": [0.9, 0.8],
                         "pointing_game_tp": [pointing, np.nan]})


def _study(folder, frame: pd.DataFrame, spread: pd.DataFrame | None = None):
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"config": {}}))
    frame.to_csv(folder / "headline.csv", index=False)
    if spread is not None:
        spread.to_csv(folder / "seed_spread.csv", index=False)
    return folder


def test_seed_spread_rows_skip_metrics_without_two_finite_seeds():
    spread = expectation.seed_spread({0: _headline(0.98, 0.95), 1: _headline(0.99, 0.96),
                                      2: _headline(0.97, 0.93)}, key="model")
    keys = set(zip(spread["key"], spread["metric"]))
    assert ("Pgds-ResNet", "pointing_game_tp") in keys
    assert ("ResNet-34", "pointing_game_tp") not in keys   # NaN for every seed
    row = spread[(spread["key"] == "Pgds-ResNet") & (spread["metric"] == "auroc")].iloc[0]
    assert row["values"] == "0.9800;0.9900;0.9700" and row["n_seeds"] == 3
    assert row["mean"] == pytest.approx(0.98)


@pytest.fixture()
def committed(tmp_path):
    spread = expectation.seed_spread({0: _headline(0.98, 0.95), 1: _headline(0.99, 0.96),
                                      2: _headline(0.97, 0.93)}, key="model")
    root = tmp_path / "committed"
    _study(root / "pgds", _headline(0.98, 0.95), spread)
    return root


def test_fresh_run_within_the_spread_exits_0(committed, tmp_path, capsys):
    fresh = tmp_path / "fresh"
    _study(fresh / "pgds", _headline(0.987, 0.94, 0.81))
    assert compare.main(["--expect", str(committed), str(fresh)]) == 0
    out = capsys.readouterr().out
    assert "within" in out and "OUTSIDE" not in out


def test_degraded_run_exits_1_and_names_the_value(committed, tmp_path, capsys):
    fresh = tmp_path / "fresh"
    _study(fresh / "pgds", _headline(0.90, 0.95))
    assert compare.main(["--expect", str(committed), str(fresh)]) == 1
    out = capsys.readouterr().out
    assert "OUTSIDE" in out and "Pgds-ResNet auroc 0.900" in out


def test_missing_study_or_table_is_bad_input(committed, tmp_path, capsys):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert compare.main(["--expect", str(committed), str(fresh)]) == 2
    assert "missing" in capsys.readouterr().err
    (fresh / "pgds").mkdir()
    assert compare.main(["--expect", str(committed), str(fresh)]) == 2
    assert "headline.csv" in capsys.readouterr().err


def test_without_a_spread_the_committed_cis_judge(tmp_path, capsys):
    table = pd.DataFrame({"model": ["A"], "auroc": [0.95], "auroc_lo": [0.92], "auroc_hi": [0.98]})
    committed, fresh = tmp_path / "c" / "pgds", tmp_path / "f" / "pgds"
    for folder, value in ((committed, 0.95), (fresh, 0.97)):
        _study(folder, table.assign(auroc=value))
        table.assign(auroc=value).to_csv(folder / "table1.csv", index=False)
    assert compare.main(["--expect", str(committed.parent), str(fresh.parent)]) == 0
    assert "95% CI" in capsys.readouterr().out
    table.assign(auroc=0.90).to_csv(fresh / "table1.csv", index=False)
    assert compare.main(["--expect", str(committed.parent), str(fresh.parent)]) == 1


def test_plain_compare_ignores_seed_runs_only_committed(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        (folder / "pgds").mkdir(parents=True)
        pd.DataFrame({"model": ["A"], "auroc": [0.9]}).to_csv(folder / "pgds" / "t.csv", index=False)
    (a / "pgds" / "seeds" / "seed1").mkdir(parents=True)
    pd.DataFrame({"model": ["A"], "auroc": [0.5]}).to_csv(a / "pgds" / "seeds" / "seed1" / "t.csv",
                                                          index=False)
    assert compare.main([str(a), str(b)]) == 0
    # ... but a table missing outside seeds/ is still an error
    pd.DataFrame({"model": ["A"], "auroc": [0.5]}).to_csv(a / "pgds" / "u.csv", index=False)
    assert compare.main([str(a), str(b)]) == 2


# ----------------------------------------------------------------------------- headline, seeds


def test_headline_from_tables(tmp_path):
    pd.DataFrame({"model": ["Pgds-ResNet", "VGG-16"], "auroc": [0.9, 0.8],
                  "sensitivity": [0.7, 0.6], "specificity": [0.95, 0.9], "f1": [0.8, 0.7],
                  "accuracy": [0.85, 0.8]}).to_csv(tmp_path / "table1.csv", index=False)
    pd.DataFrame({"true_positive": [True, True, True, False], "pointing_game_hit": [True, False, True, True],
                  "chance_hit": [0.1, 0.2, 0.3, 0.9], "energy_inside": [0.2, 0.4, 0.6, 1.0]}).to_csv(
        tmp_path / "gradcam_localisation.csv", index=False)
    frame = headline.build_headline(tmp_path)
    pgds = frame.set_index("model").loc["Pgds-ResNet"]
    assert pgds["pointing_game_tp"] == pytest.approx(2 / 3)
    assert pgds["pointing_game_chance_tp"] == pytest.approx(0.2)
    assert pgds["energy_inside_tp"] == pytest.approx(0.4)
    assert np.isnan(frame.set_index("model").loc["VGG-16", "pointing_game_tp"])


def test_seed_arguments_and_folders(tmp_path):
    from reproduce.pgds import pipeline

    assert seeds.parse_seeds("0,1,2") == (0, 1, 2)
    for bad in ("0", "0,0", "a,b", "-1,2"):
        with pytest.raises(Exception):
            seeds.parse_seeds(bad)
    ctx = pipeline.StudyContext(profile="ci", seed=0, runs_dir=tmp_path / "runs",
                                results_dir=tmp_path / "results")
    assert seeds.seed_folders(ctx, 0) == (tmp_path / "runs", tmp_path / "results")
    assert seeds.seed_folders(ctx, 2) == (tmp_path / "runs" / "seed2",
                                          tmp_path / "results" / "seeds" / "seed2")


def test_shared_seeds_markdown_rewrites_the_committed_pgds_spread_byte_for_byte():
    """reproduce.seeds (shared by every study) writes what pgds seeds wrote before it moved."""
    from pathlib import Path

    from reproduce.pgds import pipeline
    from reproduce.pgds import seeds as pgds_seeds

    committed = Path(__file__).resolve().parents[1] / "results" / "pgds"
    spread = pd.read_csv(committed / "seed_spread.csv")
    ctx = pipeline.StudyContext(profile="default", seed=0, runs_dir=Path("runs"),
                                results_dir=committed)
    order = [int(s) for s in str(spread["seeds"].iloc[0]).split(";")]
    assert seeds.markdown(ctx, pgds_seeds.SPEC, spread, order) == \
        (committed / "seed_spread.md").read_text(encoding="utf-8")


def test_target_lines_say_mean_and_worst_seed():
    spread = expectation.seed_spread({0: _headline(0.98, 0.9, 0.84), 1: _headline(0.99, 0.9, 0.75),
                                      2: _headline(0.97, 0.9, 0.91)}, key="model")
    lines = "\n".join(seeds.target_lines(spread, headline.TARGETS))
    assert "auroc >= 0.9: mean 0.980, worst seed 0.970 -- holds for the mean and the worst seed" in lines
    assert "pointing_game_tp >= 0.8: mean 0.833, worst seed 0.750 -- holds for the mean, NOT " \
           "for the worst seed" in lines


def test_a_fresh_value_whose_own_ci_reaches_the_interval_is_within(committed, tmp_path, capsys):
    """A proportion at its boundary (no false positive) is no finding when its CI reaches the
    expected interval; a clearly degraded AUROC is one even with its CI."""
    fresh = tmp_path / "fresh"
    frame = _headline(0.98, 0.95).assign(sensitivity=[1.0, 0.8], sensitivity_lo=[0.86, 0.7],
                                         sensitivity_hi=[1.0, 0.9])
    _study(fresh / "pgds", frame)
    assert compare.main(["--expect", str(committed), str(fresh)]) == 0
    assert "0.860-1.000" in capsys.readouterr().out
    frame = frame.assign(auroc=[0.88, 0.95], auroc_lo=[0.83, 0.9], auroc_hi=[0.92, 0.99])
    (fresh / "pgds" / "headline.csv").unlink()
    frame.to_csv(fresh / "pgds" / "headline.csv", index=False)
    assert compare.main(["--expect", str(committed), str(fresh)]) == 1


def test_spread_ignores_ci_columns():
    frame = _headline(0.98, 0.95).assign(auroc_lo=0.9, auroc_hi=1.0)
    spread = expectation.seed_spread({0: frame, 1: frame.assign(auroc=[0.97, 0.94])}, key="model")
    assert not spread["metric"].str.endswith(("_lo", "_hi")).any()
