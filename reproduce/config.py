"""Training configuration: the three profiles and every training default, in one place.

- `PROFILES["ci" | "default" | "paper"]`: input size, epoch grid, batch, learning rate, L2,
  model width and augmentation of each profile (DESIGN.md, "Profiles"):
  `ci` is tiny (tests, seconds per run), `default` is a laptop CPU (four Pgds architectures
  in about 21 minutes on 2 cores for the 1120-frame default phantom), `paper` is Tang 2023 s2.3
  (400x440x1 input, epochs 25/50/100/150/200, batch 32, Adam 1e-4, L2 1e-4) for a GPU.
- `STUDIES[study]`: each study's architectures, loss, class order, its paper's model-selection
  rule (`PaperSelection`, so selection.json can say whether a run departs from it) and
  per-profile training overrides (`train_overrides`: a study's own recipe, as config).
- `TrainConfig`: the typed, frozen configuration of ONE training run (one architecture, one
  fold); `make_config(study, architecture, profile, **overrides)` builds it from the tables
  above; `TrainConfig.to_dict()` is what `run.json` records.
- Hyper-parameter rules as small pure functions: `class_weights`, `per_replica_batch`,
  `steps_per_epoch`, `check_epoch_grid`, `parse_epoch_grid`, `parse_shard`, `profile_width`,
  `parse_model_options`.
- Training-engine options added for Qi 2025 (`optimizer` adam|adamw + `weight_decay`,
  `schedule` constant|warmup_cosine + `warmup_epochs`, `selection_metric` val_loss|val_accuracy,
  `early_stopping_patience`, `selection_split` val|test_fold): `ENGINE_DEFAULTS` holds their
  defaults, which are exactly the engine's behaviour before they existed.

Nothing here imports TensorFlow, so reading a config is instant.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from data_prep.errors import InputError

PROFILE_NAMES = ("ci", "default", "paper")
SELECTIONS = ("grid", "best_epoch")
SELECTION_METRICS = ("val_loss", "val_accuracy")
# Where the selection images come from. Only RECORDED by the engine (the caller passes the
# table): "test_fold" is the CNS authors' protocol (best epoch by accuracy on the held-out test
# patient), which reads the test labels and so inflates the test figures.
SELECTION_SPLITS = ("val", "test_fold")
OPTIMIZERS = ("adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "warmup_cosine")
LOSSES = ("bce", "weighted_ce", "arcface", "cosface")
AUGMENT_MODES = ("none", "offline", "on_the_fly")
CACHE_MODES = ("none", "memory", "decoded")
# How frames become model input (reproduce.input_pipeline.TRANSFORMS, kept equal by a test):
# minmax = Tang 2023's code (resize, per-image min-max); imagenet = Qi 2025's code
# (RandomResizedCrop + flip for training, Resize + CenterCrop for evaluation, ImageNet mean/SD);
# face = Hong 2021 (rotation + RandomResizedCrop + flip of aligned faces, [0, 1] levels).
TRANSFORMS = ("minmax", "imagenet", "face")
STRATEGIES = ("none", "mirrored", "multiworker")
# CPU compute precision: float32, Keras mixed_bfloat16, or auto = bf16 only where the CPU lists
# bf16 instructions (`cpu_bf16_flags`). GPU mixed_float16 is `mixed_precision`, apart.
PRECISIONS = ("float32", "bfloat16", "auto")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")

# Where trained models, checkpoints and logs go (git-ignored; never results/).
RUNS_DIR = "runs"


@dataclass(frozen=True)
class Profile:
    """Settings that change with the compute budget. `size_wh=None`: the architecture's paper
    input (models.registry.study_input_shape); `width=None`: the architecture's paper width;
    `l2=None`: the architecture's study default (models.registry.default_options: 1e-4 on
    every conv for the four Pgds architectures, as Tang 2023 and the authors' code)."""

    name: str
    size_wh: tuple[int, int] | None
    channels: int | None
    epoch_grid: tuple[int, ...]
    batch_size: int
    learning_rate: float
    l2: float | None
    width: int | None
    augment: str
    description: str
    # Per-architecture widths that replace `width` (a compute budget, see the default profile).
    width_by_arch: Mapping[str, int] = field(default_factory=dict)
    # Re-estimate batch-norm statistics from the training images before each validation
    # (reproduce.precise_bn); False: Keras's moving averages, as the authors' code.
    precise_bn: bool = False
    # Optimiser recipe (TrainConfig has the meaning of each); the defaults are Adam at a
    # constant rate, what every profile trained with before these fields existed.
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: int = 1


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci", size_wh=(70, 64), channels=1, epoch_grid=(1, 2), batch_size=8,
        learning_rate=1e-3, l2=None, width=4, augment="none", precise_bn=True,
        description="tiny: 70x64 input, width-4 models, epochs (1, 2), batch 8, Adam 1e-3 (so two "
                    "epochs move the weights); for tests"),
    "default": Profile(
        # Adam 1e-3, not the paper's 1e-4: width-8 networks on a 30-epoch budget (the paper:
        # full width, up to 200 epochs); at 1e-4 the validation AUROC of Pgds-ResNet on the
        # earlier 372-image phantom stayed at 0.53-0.65 over 100 epochs against 0.75-0.97 at
        # 1e-3. 1e-3 is still a constant rate, so the epoch-grid snapshots stay valid.
        # VGGs at width 4: at width 8 a VGG-16 costs 10x the multiply-adds of Pgds-ResNet and
        # the two VGGs took 1160 of the 1660 s of training (2 cores); width 4 trains 2.15x
        # faster (267 against 124 images/s in memory; width 6 is no faster than 8: oneDNN
        # vectorises channels in eights).
        name="default", size_wh=(140, 128), channels=1, epoch_grid=(10, 20, 30), batch_size=32,
        learning_rate=1e-3, l2=None, width=8, width_by_arch={"vgg16": 4, "vgg19": 4},
        augment="on_the_fly", precise_bn=True,
        description="laptop CPU: 140x128 input, width-8 ResNets and width-4 VGGs, epochs "
                    "(10, 20, 30), batch 32, Adam 1e-3, the paper's 2x/6x augmentation drawn on "
                    "the fly, batch-norm statistics re-estimated before each validation; about "
                    "21 min of training for the four Pgds architectures on the default phantom "
                    "(2 cores)"),
    "paper": Profile(
        name="paper", size_wh=None, channels=None, epoch_grid=(25, 50, 100, 150, 200),
        batch_size=32, learning_rate=1e-4, l2=None, width=None, augment="offline",
        description="Tang 2023 s2.3: the architecture's paper input (400x440x1 for ResNets), "
                    "epochs (25, 50, 100, 150, 200), batch 32, Adam 1e-4, L2 1e-4, "
                    "offline augmentation 2x normal / 6x disease"),
}


@dataclass(frozen=True)
class PaperSelection:
    """How a study's paper (or its authors' code) chose the model it reports: the TrainConfig
    values that reproduce it. reproduce.train names a run that differs a departure."""

    source: str
    selection: str
    selection_metric: str
    selection_split: str
    early_stopping_patience: int | None
    description: str

    def matches(self, config: "TrainConfig") -> bool:
        return (config.selection, config.selection_metric, config.selection_split,
                config.early_stopping_patience) == (self.selection, self.selection_metric,
                                                    self.selection_split,
                                                    self.early_stopping_patience)


@dataclass(frozen=True)
class Study:
    """What a study trains: architectures (models.registry names), loss, class order.

    `labels` fixes the class index order (the last one is the positive class of a binary
    study); None means "the manifest's labels, sorted". `multiplicity` is the augmentation
    multiplicity per label (images in total per original, the original included).
    `paper_selection`: the paper's model-selection rule (None: not recorded).
    `train_overrides[profile]`: TrainConfig values this study uses under that profile, applied
    after the profile's and before the caller's (a study's own recipe as config, not code).
    """

    key: str
    architectures: tuple[str, ...]
    loss: str
    labels: tuple[str, ...] | None
    multiplicity: Mapping[str, int] | None
    note: str
    paper_selection: PaperSelection | None = None
    train_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


STUDIES: dict[str, Study] = {
    "pgds": Study(
        key="pgds", architectures=("pgds_resnet", "resnet34", "vgg16", "vgg19"), loss="bce",
        labels=("normal", "genetic_disease"),
        multiplicity={"normal": 2, "genetic_disease": 6},
        note="Tang 2023: 2-unit softmax + binary cross-entropy, Adam 1e-4, batch 32, epoch grid, "
             "model with the smallest validation loss",
        paper_selection=PaperSelection(
            source="Tang 2023 s2.3", selection="grid", selection_metric="val_loss",
            selection_split="val", early_stopping_patience=None,
            description="smallest validation loss among the epoch-grid models")),
    "cns": Study(
        key="cns", architectures=("resnet34",), loss="weighted_ce", labels=None, multiplicity=None,
        note="Qi 2025: ResNet-34 with class-weighted cross-entropy (n_total / (n_classes * n_c))",
        paper_selection=PaperSelection(
            source="Qi 2025 (the authors' code)", selection="best_epoch",
            selection_metric="val_accuracy", selection_split="test_fold",
            early_stopping_patience=5,
            description="highest accuracy on the held-out test patient over every epoch, early "
                        "stopping with patience 5 (test-fold selection)"),
        train_overrides={
            # The authors' code: 224x224 RGB, ImageNet normalisation, RandomResizedCrop + flip,
            # AdamW 5e-4 / wd 5e-2, 20 epochs, batch 128, one warm-up epoch then cosine, best
            # epoch by accuracy, patience 5. Honest by default: the epoch is chosen on the
            # TRAINING patients' validation split (selection_split "val"), a recorded departure.
            "paper": dict(size_wh=(224, 224), channels=3, transform="imagenet",
                          augment="on_the_fly", crop_min_area=0.08, optimizer="adamw",
                          learning_rate=5e-4, weight_decay=5e-2, schedule="warmup_cosine",
                          warmup_epochs=1, epoch_grid=(20,), batch_size=128,
                          selection="best_epoch", selection_metric="val_accuracy",
                          early_stopping_patience=5, precise_bn=False),
            # CPU budget (2 cores, 5 folds x 2 tasks): ResNet-34 narrowed to the ResNet-10
            # layout (one block per stage: the same stages and Grad-CAM layer names) at width
            # 16, 96x96, 26 epochs at batch 16 and AdamW 2e-3 (from scratch: a smaller batch
            # and a higher rate than the paper's fine-tuning; on fold 0 of the 4-class task
            # batch 16 reached image AUROC 0.85 where batch 32 reached 0.71 in the same 30
            # epochs, and the full ResNet-34 at width 8 did not leave chance in 10), crops
            # keeping at least 70 % of a frame (an 8 % crop of a 96-pixel frame is ~27 pixels:
            # the anomaly is often cut away while its label stays; over all folds crops of 0.7,
            # 28 epochs and patience 10 against 0.5, 24 and 8 raised 4-class patient accuracy
            # 0.82 -> 0.89 and 5-class macro AUROC 0.90 -> 0.92; 26 epochs fit the budget),
            # the decoded frames held in memory, batch-norm statistics re-estimated from 256
            # training images (all ~400 cost 0.53 s of a 2.4-s epoch), early stopping after 10
            # epochs without a better validation accuracy, a checkpoint committed every 5
            # epochs (each .keras save cost 0.4 s of every epoch).
            "default": dict(size_wh=(96, 96), channels=3, width=16,
                            model_options={"blocks": (1, 1, 1, 1)}, transform="imagenet",
                            augment="on_the_fly", crop_min_area=0.7, cache="decoded",
                            optimizer="adamw", learning_rate=2e-3, weight_decay=5e-2,
                            schedule="warmup_cosine", warmup_epochs=1, epoch_grid=(26,),
                            batch_size=16, selection="best_epoch",
                            selection_metric="val_accuracy", early_stopping_patience=10,
                            precise_bn=True, precise_bn_images=256, checkpoint_every=5),
            # ci: one block per stage (ResNet-10 layout, the same stages and Grad-CAM layer
            # names): ResNet-34's 110 variables take ~15 s to trace per run, 10 runs per suite.
            "ci": dict(size_wh=(64, 64), channels=3, width=4, model_options={"blocks": (1, 1, 1, 1)},
                       transform="imagenet",
                       augment="on_the_fly", crop_min_area=0.35, optimizer="adamw",
                       learning_rate=2e-3, weight_decay=5e-2, schedule="warmup_cosine",
                       warmup_epochs=1, epoch_grid=(3,), batch_size=16, selection="best_epoch",
                       selection_metric="val_accuracy", early_stopping_patience=5,
                       precise_bn=True),
        }),
    "ps_face": Study(
        key="ps_face", architectures=("iresnet100",), loss="cosface",
        labels=("williams_beuren", "noonan", "alagille", "none"), multiplicity=None,
        note="Shen 2024: ResNet-100 with an ArcFace or CosFace margin head (CosFace was best)",
        paper_selection=PaperSelection(
            source="Shen 2024 (abstract: silent; read as the smallest validation loss)",
            selection="best_epoch", selection_metric="val_loss", selection_split="val",
            early_stopping_patience=None,
            description="the epoch with the smallest loss on a validation fifth of the "
                        "training children"),
        # The head (loss, margin) and the initial weights of each of the four models are
        # PS_FACE_MODELS below; these are the backbone and the optimiser per profile.
        train_overrides={
            # Shen 2024: IResNet-100 at the 112x112 ArcFace crop (insightface layout).
            # Unstated: optimiser, rate, batch, epochs -> Adam 1e-4 (a fine-tuning rate),
            # batch 32, 40 epochs, the best epoch by validation loss.
            "paper": dict(size_wh=(112, 112), channels=3, width=64, transform="face",
                          augment="on_the_fly", crop_min_area=0.8, optimizer="adam",
                          learning_rate=1e-4, epoch_grid=(40,), batch_size=32,
                          selection="best_epoch", selection_metric="val_loss",
                          precise_bn=False),
            # CPU budget (2 cores, 4 models x 5 folds + a pretraining run): IResNet narrowed
            # to one IBasicBlock per stage (blocks 1/1/1/1, the same stage and layer names),
            # width 16, a 128-d embedding, 64x64 input (the 112 crop resized).
            "default": dict(size_wh=(64, 64), channels=3, width=16,
                            model_options={"blocks": (1, 1, 1, 1), "embedding_size": 128},
                            transform="face", augment="on_the_fly", crop_min_area=0.8,
                            cache="decoded", optimizer="adam", learning_rate=1e-3,
                            epoch_grid=(20,), batch_size=16, selection="best_epoch",
                            selection_metric="val_loss", precise_bn=True,
                            precise_bn_images=256, checkpoint_every=5),
            # ci: blocks 1/1/1/1, width 4, a 32-d embedding at 32x32, run eagerly (tracing
            # cost 5-12 s of a ~7-15 s run): seconds per run.
            "ci": dict(size_wh=(32, 32), channels=3, width=4,
                       model_options={"blocks": (1, 1, 1, 1), "embedding_size": 32},
                       transform="face", augment="on_the_fly", crop_min_area=0.8,
                       cache="decoded", optimizer="adam", learning_rate=1e-3, epoch_grid=(3,),
                       batch_size=8, selection="best_epoch", selection_metric="val_loss",
                       precise_bn=True, checkpoint_every=5, run_eagerly=True),
        }),
    "gs_vgg16": Study(
        key="gs_vgg16", architectures=("vgg16_face",), loss="bce", labels=("healthy", "syndrome"),
        multiplicity=None,
        note="Hong 2021: face VGG-16 (fully connected layers as convolutions, BN, 50 % dropout), "
             "2-unit softmax, RMSProp, random rotation / crop / flip",
        paper_selection=PaperSelection(
            source="Hong 2021 (silent; read as the smallest validation loss)",
            selection="best_epoch", selection_metric="val_loss", selection_split="val",
            early_stopping_patience=None,
            description="the epoch with the smallest loss on the validation fifth (3:1:1)"),
        train_overrides={
            # Hong 2021 gives the optimiser (RMSProp), the input (224x224x3 aligned faces) and
            # the augmentation (rotation, crop, flip) but no rate, batch or epochs: RMSProp
            # 1e-4 (a fine-tuning rate), batch 32, 50 epochs, the best epoch by validation loss.
            "paper": dict(size_wh=(224, 224), channels=3, transform="face", augment="on_the_fly",
                          crop_min_area=0.8, optimizer="rmsprop", learning_rate=1e-4,
                          epoch_grid=(50,), batch_size=32, selection="best_epoch",
                          selection_metric="val_loss", precise_bn=False),
            # CPU budget: 96x96 aligned faces, VGG-16 at width 8 (fc6/fc7 512 wide), from
            # scratch, Adam 1e-3 (a departure: on fold 0 of the default phantom RMSProp at
            # 1e-4, 3e-4 and 1e-3 stayed near chance for 40 epochs, validation accuracy
            # 0.44-0.62, where Adam 1e-3 reached 0.79 and was still improving), 60 epochs at
            # batch 16 (50 gave five-fold AUC 0.891 +- 0.062 in 6.7 min), BN statistics
            # re-estimated.
            "default": dict(size_wh=(96, 96), channels=3, width=8, transform="face",
                            augment="on_the_fly", crop_min_area=0.8, cache="decoded",
                            optimizer="adam", learning_rate=1e-3, epoch_grid=(60,),
                            batch_size=16, selection="best_epoch", selection_metric="val_loss",
                            precise_bn=True, precise_bn_images=256, checkpoint_every=5),
            "ci": dict(size_wh=(48, 48), channels=3, width=2, transform="face",
                       augment="on_the_fly", crop_min_area=0.8, optimizer="rmsprop",
                       learning_rate=1e-3, epoch_grid=(3,), batch_size=8, selection="best_epoch",
                       selection_metric="val_loss", precise_bn=True),
        }),
}


# Shen 2024's four models: (loss, margin head options, pretrained?). ArcFace s 64, m 0.5
# (Deng 2019); CosFace s 64, m 0.4 (insightface arcface_torch's CosFace setting; the CosFace
# paper used 0.35; Shen's abstract gives neither). The cure for the known non-convergence from
# scratch (insightface issues): a margin warm-up over the first `warmup_epochs` epochs
# (models.margins: the true class's logit blended from cos to the margin logit), with the
# sqrt(1 - cos^2) clamp ArcFace always has; recorded in every run.json as `margin`.
PS_FACE_MARGIN_WARMUP_EPOCHS = {"ci": 1, "default": 3, "paper": 2}
PS_FACE_HEADS: dict[str, dict[str, float]] = {"arcface": {"s": 64.0, "m": 0.5},
                                              "cosface": {"s": 64.0, "m": 0.4}}
PS_FACE_MODELS: dict[str, tuple[str, bool]] = {
    "arcface_scratch": ("arcface", False), "arcface_pretrained": ("arcface", True),
    "cosface_scratch": ("cosface", False), "cosface_pretrained": ("cosface", True)}
# The pretraining run ("foundation model") on the phantom: the same backbone, trained as a
# face recogniser (ArcFace head over the identities of data_prep.phantom_ps_face's identity
# set); the last photo of each identity validates. Epochs per profile; the rest as the study's.
PS_FACE_PRETRAIN_HEAD = "arcface"
PS_FACE_PRETRAIN_EPOCHS = {"ci": 3, "default": 20, "paper": 40}
# Seed of the identity phantom = this + the study seed: another draw than the four-group set,
# so no pretraining identity has a study child's face.
PS_FACE_PRETRAIN_SEED_OFFSET = 1_000_000


@dataclass(frozen=True)
class TrainConfig:
    """One training run (one architecture, one fold). Recorded whole in `run.json`.

    `batch_size` is the GLOBAL batch (what the paper's 32 means): under tf.distribute each of
    R replicas gets batch_size / R images (`per_replica_batch`), so the optimisation is the
    same whatever the number of devices.

    Optimiser: `optimizer` "adam" (keras Adam, Tang 2023), "rmsprop" (keras RMSprop, rho 0.9,
    Hong 2021 names RMSProp and nothing else) or "adamw" (keras AdamW: decoupled
    weight decay, each step w <- w - learning_rate * weight_decay * w on every trainable
    variable, then the Adam update; Qi 2025). `weight_decay` is AdamW's only (Adam's weight
    penalty is `l2`). `l2=None` means the architecture's default L2 regulariser under Adam and
    NONE under AdamW (the decoupled decay replaces it; set `l2` to have both).
    `schedule` "constant" (the rate is `learning_rate` throughout) or "warmup_cosine" (per
    step: linear warm-up to `learning_rate` over `warmup_epochs` epochs, then cosine decay to 0
    at max(epoch_grid); reproduce.train.WarmupCosine).

    Selection: `selection` "grid" (among the epoch-grid snapshots) or "best_epoch" (every
    epoch), by `selection_metric` "val_loss" (smallest) or "val_accuracy" (highest; ties: the
    smaller val loss, then the earlier epoch). `early_stopping_patience` (best_epoch only): stop
    after that many epochs without a new selected epoch; the run is then complete.
    `selection_split` "val" | "test_fold" only records where the validation images came from
    (the caller passes that table).

    Input: `transform` "minmax" (Tang 2023), "face" (Hong 2021: reproduce.input_pipeline) or
    "imagenet" (Qi 2025: RandomResizedCrop with area
    `crop_min_area`-100 % and a horizontal flip when `augment` is "on_the_fly", Resize +
    CenterCrop for evaluation, ImageNet mean/SD). `init_weights`: a weights file the user named
    (models.weights.load_weights_file, matched by layer name; the classifier keeps its initial
    weights when its class count differs), None = random initialisation. Under a non-constant schedule a grid snapshot at epoch e is
    not an e-epoch run, so "grid" with more than one grid epoch is refused.
    """

    study: str
    architecture: str
    profile: str
    fold: int = 0
    size_wh: tuple[int, int] | None = (70, 64)
    channels: int | None = 1
    epoch_grid: tuple[int, ...] = (1, 2)
    selection: str = "grid"
    batch_size: int = 8
    learning_rate: float = 1e-3
    l2: float | None = None
    width: int | None = None
    loss: str = "bce"
    labels: tuple[str, ...] | None = None
    augment: str = "none"
    multiplicity: Mapping[str, int] | None = None
    cache: str = "none"
    seed: int = 0
    mixed_precision: bool = False
    precision: str = "float32"
    xla: bool = False
    strategy: str = "none"
    model_options: Mapping[str, Any] = field(default_factory=dict)
    precise_bn: bool = False
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: int = 1
    selection_metric: str = "val_loss"
    early_stopping_patience: int | None = None
    selection_split: str = "val"
    transform: str = "minmax"
    crop_min_area: float = 0.08
    init_weights: str | None = None
    # Margin head options (models.margins: s, m, and warmup_epochs -> the head's warmup_steps)
    # for loss arcface / cosface; {} = the head's defaults.
    margin: Mapping[str, Any] = field(default_factory=dict)
    # Train without tf.function (Keras run_eagerly): the same maths, no tracing; for runs so
    # small that tracing costs more than the training (the ps_face ci profile: 21 runs).
    run_eagerly: bool = False
    # Operational, not numerical: commit a checkpoint (and state.json, log.csv, monitor.csv)
    # every this many epochs, and always at grid epochs, an early stop and the last epoch. A
    # kill loses at most checkpoint_every - 1 epochs; a resumed run is the same run either way.
    checkpoint_every: int = 1
    # Training images that re-estimate the BN statistics before each validation (an evenly
    # spaced subset of a larger training split; reproduce.precise_bn).
    precise_bn_images: int = 2048

    def __post_init__(self) -> None:
        # Normalise sequences (JSON gives lists back) so equal configs compare equal.
        object.__setattr__(self, "epoch_grid", check_epoch_grid(self.epoch_grid))
        if self.size_wh is not None:
            object.__setattr__(self, "size_wh", tuple(int(v) for v in self.size_wh))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
        for name, value, allowed in (("selection", self.selection, SELECTIONS),
                                     ("loss", self.loss, LOSSES),
                                     ("augment", self.augment, AUGMENT_MODES),
                                     ("cache", self.cache, CACHE_MODES),
                                     ("strategy", self.strategy, STRATEGIES),
                                     ("profile", self.profile, PROFILE_NAMES),
                                     ("optimizer", self.optimizer, OPTIMIZERS),
                                     ("schedule", self.schedule, SCHEDULES),
                                     ("selection_metric", self.selection_metric, SELECTION_METRICS),
                                     ("selection_split", self.selection_split, SELECTION_SPLITS),
                                     ("transform", self.transform, TRANSFORMS),
                                     ("precision", self.precision, PRECISIONS)):
            if value not in allowed:
                raise InputError(None, f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.batch_size < 1:
            raise InputError(None, f"batch size must be at least 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise InputError(None, f"learning rate must be positive, got {self.learning_rate}")
        if self.mixed_precision and self.precision == "bfloat16":
            raise InputError(None, "--mixed-precision (float16, GPU) and --precision bfloat16 "
                             "exclude each other; choose one")
        if self.cache == "memory" and self.augment == "on_the_fly":
            raise InputError(None, "--cache memory holds finished model inputs, but on-the-fly "
                             "augmentation needs the original frames each epoch; use "
                             "--cache decoded (the decoded frames in memory, augmented every "
                             "epoch), or --augment offline (or none) with --cache memory")
        self._check_engine_options()

    def _check_engine_options(self) -> None:
        object.__setattr__(self, "weight_decay", float(self.weight_decay))
        object.__setattr__(self, "crop_min_area", float(self.crop_min_area))
        if not 0 < self.crop_min_area <= 1:
            raise InputError(None, f"crop_min_area must be in (0, 1], got {self.crop_min_area}")
        if self.init_weights is not None:
            object.__setattr__(self, "init_weights", str(self.init_weights))
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InputError(None, f"weight decay must be a non-negative number, "
                             f"got {self.weight_decay}")
        if self.weight_decay and self.optimizer != "adamw":
            raise InputError(None, f"weight decay {self.weight_decay:g} is AdamW's decoupled decay; "
                             "use --optimizer adamw (Adam's weight penalty is --l2)")
        if isinstance(self.warmup_epochs, bool) or int(self.warmup_epochs) != self.warmup_epochs \
                or self.warmup_epochs < 0:
            raise InputError(None, f"warm-up epochs must be a non-negative integer, "
                             f"got {self.warmup_epochs!r}")
        object.__setattr__(self, "warmup_epochs", int(self.warmup_epochs))
        for name in ("checkpoint_every", "precise_bn_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise InputError(None, f"{name.replace('_', ' ')} must be a positive integer, "
                                 f"got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.schedule == "warmup_cosine" and self.warmup_epochs >= self.max_epochs:
            raise InputError(None, f"{self.warmup_epochs} warm-up epoch(s) leave nothing of the "
                             f"cosine decay in a {self.max_epochs}-epoch run; use fewer warm-up "
                             "epochs or more epochs")
        patience = self.early_stopping_patience
        if patience is not None:
            if isinstance(patience, bool) or int(patience) != patience or patience < 1:
                raise InputError(None, f"early-stopping patience must be a positive integer, "
                                 f"got {patience!r}")
            object.__setattr__(self, "early_stopping_patience", int(patience))
            if self.selection != "best_epoch":
                raise InputError(None, "early stopping picks the best of every epoch trained, but "
                                 f"--selection {self.selection} chooses among the epoch-grid "
                                 "snapshots, some of which it may never reach; use --selection "
                                 "best_epoch with --early-stopping-patience")
        if self.schedule != "constant" and self.selection == "grid" and len(self.epoch_grid) > 1:
            raise InputError(None, f"--selection grid with the epoch grid {self.epoch_grid} under "
                             f"the {self.schedule} schedule: a snapshot at epoch e of this "
                             f"{self.max_epochs}-epoch schedule is not an e-epoch run (its "
                             "learning rate has not decayed as an e-epoch schedule's would), so the "
                             "grid would compare models the paper's rule does not mean; use one "
                             "grid epoch (--epochs N), --selection best_epoch, or --schedule constant")

    @property
    def max_epochs(self) -> int:
        return max(self.epoch_grid)

    def to_dict(self) -> dict[str, Any]:
        """What run.json records. A config that leaves every ENGINE_DEFAULTS field at its
        default records without them (exactly what it recorded before they existed, so earlier
        run folders, study.run_matches and results/*/run.json still match); a config that sets
        any of them records all of them."""
        record = dataclasses.asdict(self)
        record["multiplicity"] = None if self.multiplicity is None else dict(self.multiplicity)
        record["model_options"] = dict(self.model_options)
        record["margin"] = dict(self.margin)
        if all(record[name] == value for name, value in ENGINE_DEFAULTS.items()):
            for name in ENGINE_DEFAULTS:
                del record[name]
        for name, default in RECORDED_WHEN_SET.items():   # earlier records still match
            if record[name] == default:
                del record[name]
        if self.precision != "float32":   # "auto" depends on the CPU: record what it chose
            record["dtype_policy"] = dtype_policy(self)
        return record


# Fields recorded in run.json only when they differ from these defaults (so run folders and
# results/*/run.json written before the fields existed still match).
RECORDED_WHEN_SET: dict[str, Any] = {"precision": "float32", "checkpoint_every": 1,
                                     "precise_bn_images": 2048, "margin": {},
                                     "run_eagerly": False}

# The engine options added for Qi 2025 and their defaults: the engine's behaviour before them
# (Adam, constant learning rate, smallest validation loss, no early stopping, validation split).
ENGINE_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam", "weight_decay": 0.0, "schedule": "constant", "warmup_epochs": 1,
    "selection_metric": "val_loss", "early_stopping_patience": None, "selection_split": "val",
    "transform": "minmax", "crop_min_area": 0.08, "init_weights": None}


def make_config(study: str, architecture: str, profile: str, **overrides: Any) -> TrainConfig:
    """The config of one run: profile defaults, then the study's (its loss, labels, then its
    `train_overrides[profile]`), then `overrides` (non-None)."""
    if profile not in PROFILES:
        raise InputError(None, f"profile must be one of {', '.join(PROFILE_NAMES)}, got {profile!r}")
    if study not in STUDIES:
        raise InputError(None, f"study must be one of {', '.join(STUDIES)}, got {study!r}")
    prof, spec = PROFILES[profile], STUDIES[study]
    values: dict[str, Any] = dict(
        study=study, architecture=architecture, profile=profile, size_wh=prof.size_wh,
        channels=prof.channels, epoch_grid=prof.epoch_grid, batch_size=prof.batch_size,
        learning_rate=prof.learning_rate, l2=prof.l2,
        width=profile_width(prof, architecture), loss=spec.loss,
        labels=spec.labels, augment=prof.augment if spec.multiplicity else "none",
        multiplicity=spec.multiplicity, precise_bn=prof.precise_bn, optimizer=prof.optimizer,
        weight_decay=prof.weight_decay, schedule=prof.schedule, warmup_epochs=prof.warmup_epochs)
    values.update(spec.train_overrides.get(profile, {}))
    values.update({key: value for key, value in overrides.items() if value is not None})
    if values.get("augment") == "offline" and values.get("multiplicity") is None:
        raise InputError(None, f"study {study} has no augmentation multiplicity; use --augment none")
    if (values.get("augment") == "on_the_fly" and values.get("multiplicity") is None
            and values.get("transform", "minmax") == "minmax"):
        raise InputError(None, f"study {study} has no augmentation multiplicity; use --augment "
                         "none (or --transform imagenet or face: random crops and flips of every "
                         "image)")
    return TrainConfig(**values)


# ----------------------------------------------------------------------------- pure rules


def profile_width(profile: Profile, architecture: str) -> int | None:
    """The model width `profile` trains `architecture` at (`width_by_arch`, else `width`)."""
    return profile.width_by_arch.get(architecture, profile.width)


def class_weights(counts: Mapping[str, int]) -> dict[str, float]:
    """Class weights from training frequencies: n_total / (n_classes * n_c) (Qi 2025's weighted
    cross-entropy; scikit-learn's "balanced" rule). A balanced set gives 1.0 for every class."""
    if not counts or any(n <= 0 for n in counts.values()):
        raise InputError(None, f"every class needs at least one training image, got {dict(counts)}")
    total = sum(counts.values())
    return {label: total / (len(counts) * n) for label, n in counts.items()}


def per_replica_batch(global_batch: int, replicas: int) -> int:
    """Images per replica when the GLOBAL batch is split over `replicas` devices."""
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    if global_batch % replicas:
        raise InputError(None, f"batch size {global_batch} does not split evenly over "
                         f"{replicas} replicas; choose a multiple of {replicas}")
    return global_batch // replicas


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Batches per epoch; the last one may be partial (no image is dropped)."""
    return math.ceil(n_images / batch_size)


def check_epoch_grid(grid: Sequence[int]) -> tuple[int, ...]:
    """A grid is a non-empty, strictly increasing tuple of positive epoch counts."""
    grid = tuple(int(e) for e in grid)
    if not grid or any(e < 1 for e in grid) or any(b <= a for a, b in zip(grid, grid[1:])):
        raise InputError(None, f"epoch grid must be strictly increasing positive integers, got {grid}")
    return grid


def parse_epoch_grid(text: str) -> tuple[int, ...]:
    """'25,50,100' -> (25, 50, 100)."""
    try:
        grid = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(None, f"--epochs must be comma-separated integers such as 25,50,100; "
                         f"got {text!r}") from None
    return check_epoch_grid(grid)


def parse_model_options(items: Sequence[str]) -> dict[str, Any]:
    """['dropout=0.3', 'blocks=1,1,1,1', 'preactivation=False'] -> {'dropout': 0.3, ...}
    (values read as Python literals, else kept as text)."""
    import ast

    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InputError(None, f"--model-option must look like KEY=VALUE, got {item!r}")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        options[key.strip()] = value
    return options


def parse_folds(text: str) -> tuple[int, ...]:
    """'0,2' -> (0, 2): distinct non-negative fold numbers, in the order given."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        folds = tuple(int(part) for part in parts)
    except ValueError:
        folds = ()
    if not folds or any(f < 0 for f in folds) or len(set(folds)) != len(folds):
        raise InputError(None, f"--folds must be distinct non-negative integers such as 0,1,2; "
                         f"got {text!r}")
    return folds


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (0 <= i < n) -> (i, n): this machine runs shard i of n of the run grid."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise InputError(None, f"--shard must look like i/n (for example 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(None, f"--shard {text}: need n >= 1 and 0 <= i < n")
    return index, count


def cpu_bf16_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The bf16 instruction flags (BF16_CPU_FLAGS) the CPU lists in /proc/cpuinfo (or the text
    given); () where there is none or the file cannot be read (not Linux)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as handle:
                cpuinfo = handle.read()
        except OSError:
            return ()
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.startswith("flags")), [])
    return tuple(flag for flag in BF16_CPU_FLAGS if flag in flags)


def dtype_policy(config: "TrainConfig", bf16_flags: Sequence[str] | None = None) -> str:
    """The Keras dtype policy of a run: mixed_float16 under `mixed_precision` (GPU),
    mixed_bfloat16 under precision "bfloat16" (or "auto" on a CPU with bf16 instructions),
    else float32."""
    if config.mixed_precision:
        return "mixed_float16"
    if config.precision == "bfloat16":
        return "mixed_bfloat16"
    if config.precision == "auto":
        flags = cpu_bf16_flags() if bf16_flags is None else tuple(bf16_flags)
        return "mixed_bfloat16" if flags else "float32"
    return "float32"
