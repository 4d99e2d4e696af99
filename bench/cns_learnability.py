"""Can a network learn the CNS phantom's classes from scratch? A diagnostic, not a test.

    python bench/cns_learnability.py --root runs/cns/default/data/deidentified \
        [--labels normal,anencephaly] [--head-planes] [--arch resnet34|pgds_resnet|plain]
        [--size 96] [--width 8] [--epochs 8] [--seed 0]

Splits the manifest's patients 80/20 (seeded), feeds the frames through the training
pipeline's min-max preprocessing (reproduce.input_pipeline.materialize, no augmentation),
trains with Adam 1e-3 at batch 32 and prints, per epoch, training and held-out accuracy, then
the held-out accuracy with batch statistics (BN in training mode: tells a network that learned
nothing apart from one whose moving averages are off) and the base rate. What the README's CNS
section reports came from this script (the `paper` phantom: `python -m data_prep phantom
--study cns --profile paper --out DIR`, then `--root DIR`).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def plain_cnn(shape, classes: int, width: int):
    """Four 3x3 conv-BN-ReLU-maxpool blocks (width, 2w, 4w, 4w), global average pool, softmax."""
    import keras

    inputs = keras.Input(shape)
    x = inputs
    for factor in (1, 2, 4, 4):
        x = keras.layers.Conv2D(width * factor, 3, padding="same")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder holding manifest.csv")
    parser.add_argument("--labels", default=None, help="comma-separated labels to keep (default: all)")
    parser.add_argument("--head-planes", action="store_true", help="drop the spine plane (SP)")
    parser.add_argument("--arch", choices=("resnet34", "pgds_resnet", "plain"), default="resnet34",
                        help="models.registry network, or a plain 4-block CNN")
    parser.add_argument("--size", type=int, default=96, help="square input size (default 96)")
    parser.add_argument("--width", type=int, default=8, help="base width (default 8; plain: 16)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs (default 8)")
    parser.add_argument("--augment", action="store_true",
                        help="random flip, rotation (+-20 deg), zoom and shift (Keras layers) while training")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the weights")
    args = parser.parse_args(argv)

    import keras

    from models import registry
    from reproduce import input_pipeline as pipe

    keras.utils.set_random_seed(args.seed)
    manifest = pd.read_csv(args.root / "manifest.csv")
    if args.labels:
        manifest = manifest[manifest["label"].isin(args.labels.split(","))]
    if args.head_planes:
        manifest = manifest[manifest["plane"] != "SP"]
    manifest = manifest.reset_index(drop=True)
    labels = sorted(manifest["label"].unique())
    y = manifest["label"].map({name: i for i, name in enumerate(labels)}).to_numpy()
    cases = manifest["case_id"].unique()
    rng = np.random.default_rng(args.seed)
    held_out = manifest["case_id"].isin(set(rng.choice(cases, len(cases) // 5, replace=False))).to_numpy()
    spec = pipe.PipelineSpec(size_wh=(args.size, args.size), channels=3, num_classes=len(labels))
    x = pipe.materialize(pipe.ImageTable(tuple(str(args.root / p) for p in manifest["image_path"]), y), spec)
    shape = (args.size, args.size, 3)
    model = (plain_cnn(shape, len(labels), args.width) if args.arch == "plain" else
             registry.build(args.arch, shape, len(labels), width=args.width, l2=0.0))
    if args.augment:
        augmented = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.055),
                                      keras.layers.RandomZoom(0.15), keras.layers.RandomTranslation(0.08, 0.08)])
        inputs = keras.Input(shape)
        model = keras.Model(inputs, model(augmented(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    onehot = keras.utils.to_categorical(y, len(labels))
    started = time.perf_counter()
    history = model.fit(x[~held_out], onehot[~held_out], validation_data=(x[held_out], onehot[held_out]),
                        epochs=args.epochs, batch_size=32, verbose=0).history
    batch_stats = np.concatenate([model(x[held_out][i:i + 32], training=True).numpy()
                                  for i in range(0, int(held_out.sum()), 32)])
    base = np.bincount(y[held_out]).max() / held_out.sum()
    confusion = pd.crosstab(pd.Series(np.array(labels)[y[held_out]], name="true"),
                            pd.Series(np.array(labels)[batch_stats.argmax(1)], name="called"))
    print(f"{args.arch} width {args.width} at {args.size}x{args.size}, labels {labels}, "
          f"{(~held_out).sum()} training / {held_out.sum()} held-out images, "
          f"{time.perf_counter() - started:.0f} s")
    print("training accuracy:", " ".join(f"{v:.2f}" for v in history["accuracy"]))
    print("held-out accuracy:", " ".join(f"{v:.2f}" for v in history["val_accuracy"]))
    print(f"held-out accuracy with batch statistics {np.mean(batch_stats.argmax(1) == y[held_out]):.3f}; "
          f"base rate {base:.3f}")
    print("held-out confusion (batch statistics):")
    print(confusion.to_string())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
