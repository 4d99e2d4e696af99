"""CPU precision: training and inference images/s in float32 against Keras `mixed_bfloat16`.

    .venv/bin/python bench/bench_precision.py [--archs pgds_resnet,resnet34,vgg16] [--rounds 2]

For Pgds-ResNet, ResNet-34 and VGG-16 at the Pgds `default` profile's input (140x128x1, width 8,
VGG-16 width 4: reproduce.config.PROFILES["default"]), each policy builds its own model, trains
one warm-up epoch (tracing) and then times two epochs of `fit` on 256 in-memory frames (batch
32, Adam) and two passes of `predict`. Policies alternate within each round (a busy machine
slows both alike); the fastest round counts. bf16 needs the CPU's AVX-512 BF16 (or AMX)
instructions to pay: the script prints which of them /proc/cpuinfo lists, and oneDNN's own
choice when ONEDNN_VERBOSE is set.

Prints images/s per architecture and policy, the bf16/float32 ratio of each, and last the
geometric mean of the training ratios. Goal (issue 16): bf16 faster (ratio > 1) where the CPU
has the instructions; exit 1 when it is not, so RESULTS.md says why.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16")
FRAMES, BATCH, TIMED_EPOCHS = 256, 32, 2


def cpu_bf16_flags() -> list[str]:
    """The bf16-related instruction flags the CPU reports (Linux), e.g. avx512_bf16, amx_bf16."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return sorted(f for f in flags if "bf16" in f or f.startswith("amx"))


def build(arch: str, policy: str):
    import keras

    from models import registry
    from reproduce import config as cfg

    profile = cfg.PROFILES["default"]
    width_px, height_px = profile.size_wh
    keras.mixed_precision.set_global_policy(policy)
    options = dict(registry.default_options(arch))
    options["width"] = profile.width_by_arch.get(arch, profile.width)
    model = registry.build(arch, (height_px, width_px, profile.channels), 2, **options)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
    return model


def measure(arch: str, policy: str, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(training images/s, inference images/s) of a fresh model under `policy`."""
    import keras

    model = build(arch, policy)
    try:
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)   # tracing
        model.predict(x[:BATCH], batch_size=BATCH, verbose=0)
        start = time.perf_counter()
        model.fit(x, y, batch_size=BATCH, epochs=TIMED_EPOCHS, verbose=0, shuffle=False)
        train_rate = TIMED_EPOCHS * len(x) / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(2):
            model.predict(x, batch_size=BATCH, verbose=0)
        infer_rate = 2 * len(x) / (time.perf_counter() - start)
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()
    return train_rate, infer_rate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default="pgds_resnet,resnet34,vgg16",
                        help="comma-separated models.registry names (default: the three of issue 16)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the fastest counts")
    args = parser.parse_args(argv)

    from reproduce import config as cfg

    flags = cpu_bf16_flags()
    print(f"CPU bf16 instructions: {', '.join(flags) or 'none'}; "
          f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(unset)')}")
    width_px, height_px = cfg.PROFILES["default"].size_wh
    rng = np.random.default_rng(0)
    x = rng.random((FRAMES, height_px, width_px, 1), dtype=np.float32)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, FRAMES)]
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    best = {(a, p): (0.0, 0.0) for a in archs for p in POLICIES}
    for round_index in range(args.rounds):
        for arch in archs:
            for policy in (POLICIES if round_index % 2 == 0 else POLICIES[::-1]):
                train_rate, infer_rate = measure(arch, policy, x, y)
                old = best[arch, policy]
                best[arch, policy] = (max(old[0], train_rate), max(old[1], infer_rate))
                print(f"round {round_index + 1} {arch:12s} {policy:15s} train {train_rate:7.1f} "
                      f"img/s  inference {infer_rate:7.1f} img/s", flush=True)
    train_ratios = []
    print(f"\n{'model':12s} {'float32 train':>14s} {'bf16 train':>11s} {'ratio':>6s} "
          f"{'float32 infer':>14s} {'bf16 infer':>11s} {'ratio':>6s}")
    for arch in archs:
        (f_train, f_infer), (b_train, b_infer) = best[arch, "float32"], best[arch, "mixed_bfloat16"]
        train_ratios.append(b_train / f_train)
        print(f"{arch:12s} {f_train:14.1f} {b_train:11.1f} {b_train / f_train:6.2f} "
              f"{f_infer:14.1f} {b_infer:11.1f} {b_infer / f_infer:6.2f}")
    mean_ratio = math.exp(sum(math.log(r) for r in train_ratios) / len(train_ratios))
    verdict = "PASS" if mean_ratio > 1.0 else "FAIL (bf16 is not faster here)"
    print(f"bf16 / float32 training images/s (geometric mean over {len(archs)} models): "
          f"{mean_ratio:.2f}x {verdict}")
    return 0 if mean_ratio > 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
