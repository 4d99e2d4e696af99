"""Training configs and the pure hyper-parameter rules (no TensorFlow: instant)."""
from __future__ import annotations

import json

import pytest

from data_prep.errors import InputError
from reproduce import config as cfg
from reproduce.train import RunSpec, run_grid, select_epoch, shard_runs


@pytest.mark.parametrize("profile, size_wh, grid, batch, lr", [
    ("ci", (70, 64), (1, 2), 8, 1e-3),
    ("default", (140, 128), (10, 20, 30), 32, 1e-3),
    ("paper", None, (25, 50, 100, 150, 200), 32, 1e-4),  # None: the architecture's paper input
])
def test_profiles(profile, size_wh, grid, batch, lr):
    config = cfg.make_config("pgds", "pgds_resnet", profile)
    assert (config.size_wh, config.epoch_grid, config.batch_size, config.learning_rate) == \
        (size_wh, grid, batch, lr)
    assert config.loss == "bce" and config.labels == ("normal", "genetic_disease")
    assert config.max_epochs == grid[-1]


def test_paper_profile_is_tang2023():
    config = cfg.make_config("pgds", "pgds_resnet", "paper")
    assert config.augment == "offline" and dict(config.multiplicity) == {"normal": 2, "genetic_disease": 6}
    assert config.width is None and config.l2 is None  # registry defaults: paper width, L2 1e-4


@pytest.mark.parametrize("profile, arch, width", [
    ("default", "pgds_resnet", 8), ("default", "resnet34", 8), ("default", "vgg16", 4),
    ("default", "vgg19", 4), ("ci", "vgg16", 4), ("paper", "vgg16", None)])
def test_profile_width_per_architecture(profile, arch, width):
    assert cfg.make_config("pgds", arch, profile).width == width
    assert cfg.make_config("pgds", arch, profile, width=16).width == 16  # --width wins


def test_overrides_and_json_roundtrip():
    config = cfg.make_config("pgds", "vgg16", "ci", epoch_grid=[1, 3], seed=5, batch_size=None,
                             model_options={"dropout": 0.1})
    assert config.epoch_grid == (1, 3) and config.seed == 5 and config.batch_size == 8
    record = json.loads(json.dumps(config.to_dict()))
    assert cfg.TrainConfig(**{**record, "epoch_grid": record["epoch_grid"]}).to_dict() == config.to_dict()


@pytest.mark.parametrize("overrides, message", [
    (dict(selection="best"), "selection must be one of"),
    (dict(loss="mse"), "loss must be one of"),
    (dict(epoch_grid=(2, 1)), "strictly increasing"),
    (dict(epoch_grid=(0, 1)), "strictly increasing"),
    (dict(batch_size=0), "batch size"),
    (dict(cache="memory", augment="on_the_fly"), "on-the-fly augmentation"),
])
def test_bad_configs_raise_input_error(overrides, message):
    with pytest.raises(InputError, match=message):
        cfg.make_config("pgds", "pgds_resnet", "ci", **overrides)


@pytest.mark.parametrize("counts, expected", [
    ({"a": 50, "b": 50}, {"a": 1.0, "b": 1.0}),
    ({"normal": 845, "genetic_disease": 275}, {"normal": 1120 / 1690, "genetic_disease": 1120 / 550}),
    ({"x": 10, "y": 30, "z": 60}, {"x": 100 / 30, "y": 100 / 90, "z": 100 / 180}),
])
def test_class_weights(counts, expected):
    weights = cfg.class_weights(counts)
    assert weights == pytest.approx(expected)
    # Weighted class totals are equal: n_c * w_c = n_total / n_classes.
    assert {c: counts[c] * w for c, w in weights.items()} == pytest.approx(
        {c: sum(counts.values()) / len(counts) for c in counts})


@pytest.mark.parametrize("global_batch, replicas, expected", [(32, 1, 32), (32, 2, 16), (32, 8, 4)])
def test_per_replica_batch(global_batch, replicas, expected):
    assert cfg.per_replica_batch(global_batch, replicas) == expected


def test_per_replica_batch_must_divide():
    with pytest.raises(InputError, match="does not split evenly"):
        cfg.per_replica_batch(30, 4)


@pytest.mark.parametrize("n, batch, expected", [(10, 8, 2), (16, 8, 2), (1, 32, 1), (3246, 32, 102)])
def test_steps_per_epoch(n, batch, expected):
    assert cfg.steps_per_epoch(n, batch) == expected


@pytest.mark.parametrize("text, expected", [("25,50,100,150,200", (25, 50, 100, 150, 200)),
                                            ("3", (3,)), (" 1, 2 ", (1, 2))])
def test_parse_epoch_grid(text, expected):
    assert cfg.parse_epoch_grid(text) == expected


@pytest.mark.parametrize("text", ["a,b", "5,5", "", "-1,2"])
def test_parse_epoch_grid_rejects(text):
    with pytest.raises(InputError):
        cfg.parse_epoch_grid(text)


@pytest.mark.parametrize("text, expected", [("0/1", (0, 1)), ("2/4", (2, 4))])
def test_parse_shard(text, expected):
    assert cfg.parse_shard(text) == expected


@pytest.mark.parametrize("text", ["4/4", "1", "a/b", "0/0", "-1/3"])
def test_parse_shard_rejects(text):
    with pytest.raises(InputError, match="--shard"):
        cfg.parse_shard(text)


def test_parse_model_options():
    assert cfg.parse_model_options(["dropout=0.3", "blocks=1,1,1,1", "preactivation=False", "head=softmax"]) == \
        {"dropout": 0.3, "blocks": (1, 1, 1, 1), "preactivation": False, "head": "softmax"}
    with pytest.raises(InputError, match="KEY=VALUE"):
        cfg.parse_model_options(["dropout"])


GRID = run_grid("pgds", ("pgds_resnet", "resnet34", "vgg16", "vgg19"), (0, 1))


def test_run_grid_order():
    assert len(GRID) == 8
    assert GRID[:3] == [RunSpec("pgds", "pgds_resnet", 0), RunSpec("pgds", "pgds_resnet", 1),
                        RunSpec("pgds", "resnet34", 0)]
    assert GRID[2].describe() == "pgds resnet34 fold 0"


@pytest.mark.parametrize("index, count, expected_positions", [
    (0, 1, list(range(8))),
    (0, 3, [0, 3, 6]),
    (1, 3, [1, 4, 7]),
    (2, 3, [2, 5]),
    (3, 4, [3, 7]),
    (5, 10, [5]),
    (9, 10, []),
])
def test_shard_runs_round_robin(index, count, expected_positions):
    assert shard_runs(GRID, index, count) == [GRID[i] for i in expected_positions]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 11])
def test_shards_partition_the_grid(count):
    shards = [shard_runs(GRID, i, count) for i in range(count)]
    flat = [run for shard in shards for run in shard]
    assert sorted(flat, key=GRID.index) == GRID and len(flat) == len(set(flat))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards == [shard_runs(GRID, i, count) for i in range(count)]  # deterministic


def test_shard_runs_rejects_bad_index():
    with pytest.raises(ValueError):
        shard_runs(GRID, 2, 2)


HISTORY = [{"epoch": 1, "val_loss": 0.9}, {"epoch": 2, "val_loss": 0.5}, {"epoch": 3, "val_loss": 0.7},
           {"epoch": 4, "val_loss": 0.6}, {"epoch": 5, "val_loss": float("nan")}, {"epoch": 6, "val_loss": 0.6}]


@pytest.mark.parametrize("grid, selection, expected", [
    ((3, 6), "grid", (6, 0.6)),
    ((1, 3), "grid", (3, 0.7)),
    ((1, 3, 6), "best_epoch", (2, 0.5)),
    ((4, 6), "grid", (4, 0.6)),        # tie: the earlier epoch
    ((5,), "grid", (5, float("inf"))),  # NaN loss counts as infinite
])
def test_select_epoch(grid, selection, expected):
    assert select_epoch(HISTORY, grid, selection) == expected


# ----------------------------------------------------------------------------- CPU precision

_CPUINFO_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 fma\n"
_CPUINFO_AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


@pytest.mark.parametrize("cpuinfo, expected", [(_CPUINFO_BF16, ("avx512_bf16",)), (_CPUINFO_AVX2, ()),
                                               ("flags\t: amx_bf16 amx_tile avx512_bf16\n",
                                                ("amx_bf16", "avx512_bf16")), ("", ())])
def test_cpu_bf16_flags_read_from_cpuinfo(cpuinfo, expected):
    assert cfg.cpu_bf16_flags(cpuinfo) == expected


@pytest.mark.parametrize("overrides, flags, policy", [
    (dict(), ("avx512_bf16",), "float32"),                      # float32 unless asked
    (dict(precision="bfloat16"), (), "mixed_bfloat16"),         # asked: even without the units
    (dict(precision="auto"), ("avx512_bf16",), "mixed_bfloat16"),
    (dict(precision="auto"), (), "float32"),
    (dict(mixed_precision=True), (), "mixed_float16"),          # the GPU policy, apart
    (dict(mixed_precision=True, precision="auto"), ("amx_bf16",), "mixed_float16"),
])
def test_dtype_policy(overrides, flags, policy):
    config = cfg.make_config("pgds", "pgds_resnet", "ci", **overrides)
    assert cfg.dtype_policy(config, flags) == policy


def test_precision_is_recorded_only_when_set():
    assert "precision" not in cfg.make_config("pgds", "pgds_resnet", "ci").to_dict()
    record = cfg.make_config("pgds", "pgds_resnet", "ci", precision="bfloat16").to_dict()
    assert record["precision"] == "bfloat16" and record["dtype_policy"] == "mixed_bfloat16"


def test_float16_and_bfloat16_together_are_refused():
    with pytest.raises(InputError, match="exclude each other"):
        cfg.make_config("pgds", "pgds_resnet", "ci", mixed_precision=True, precision="bfloat16")
