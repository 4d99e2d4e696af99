"""`python -m reproduce all`: the plan's ETA, progress lines, study choice and results/README.md."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from reproduce import all as reproduce_all


def _study_folder(root, profile="default", label="PHANTOM (synthetic) data, default profile"):
    folder = root / "pgds"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"config": {"profile": profile},
                                                 "results_label": label, "git_commit": "abc1234def5",
                                                 "seed": 0}))
    (folder / "table1.md").write_text("# Table 1. Things\n\n**label**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- note\n")
    (folder / "table2.md").write_text("# Table 2\n")
    (folder / "figure3.png").write_bytes(b"\x89PNG")
    (folder / "seed_spread.md").write_text("# x\n\n- Pgds-ResNet auroc >= 0.9: mean 0.98, worst seed "
                                           "0.97 -- holds for the mean and the worst seed.\n- other\n")
    return folder


def test_expected_steps_prefer_the_previous_run_of_the_same_profile(tmp_path):
    folder = _study_folder(tmp_path)
    pd.DataFrame({"target": ["train", "table1"], "seconds": [1000.0, 20.0]}).to_csv(
        folder / "timings.csv", index=False)
    expected = reproduce_all.expected_steps("pgds", "default", ["train", "table1", "figure3"], folder)
    assert expected == {"train": 1000.0, "table1": 20.0, "figure3": 3.0}
    # a run that reused its models: the training its log.csv recorded is what counts
    pd.DataFrame({"target": ["train", "trained a", "trained b"], "seconds": [1.0, 300.0, 400.0]}
                 ).to_csv(folder / "timings.csv", index=False)
    assert reproduce_all.expected_steps("pgds", "default", ["train"], folder) == {"train": 700.0}
    # another profile's timings are not used
    expected = reproduce_all.expected_steps("pgds", "ci", ["train"], folder)
    assert expected == {"train": 60.0}


def test_progress_lines_count_down(capsys):
    progress = reproduce_all.Progress([("pgds", "train", 50.0), ("pgds", "table1", 10.0)])
    progress.step("pgds", "train")
    progress.step("pgds", "table1")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[all] [1/2] pgds train -- elapsed 0 s, ETA 60 s")
    assert lines[1].startswith("[all] [2/2] pgds table1") and lines[1].endswith("ETA 10 s")


def test_unknown_study_is_refused_before_any_work(capsys):
    assert reproduce_all.main(["--profile", "ci", "--studies", "pgds,nope"]) == 2
    assert "unknown study 'nope'" in capsys.readouterr().err


def test_results_index_puts_every_study_on_one_page(tmp_path):
    _study_folder(tmp_path)
    path = reproduce_all.write_results_index(tmp_path, ["pgds"])
    text = path.read_text()
    assert "**PHANTOM (synthetic) data, default profile** (commit abc1234def, seed 0)" in text
    assert "| a | b |" in text and "| 1 | 2 |" in text and "- note" not in text
    assert "holds for the mean and the worst seed" in text and "- other" not in text
    assert "[table2](pgds/table2.md)" in text and "![pgds figure3](pgds/figure3.png)" in text


@pytest.mark.parametrize("seconds,text", [(5, "5 s"), (89, "89 s"), (90, "1.5 min"), (1800, "30.0 min")])
def test_duration_text(seconds, text):
    assert reproduce_all.duration_text(seconds) == text
