"""Benchmarks of the training engine (reproduce.train + reproduce.input_pipeline), on CPU.

    .venv/bin/python bench/bench_train.py [grid] [pipeline] [memory] [profile]   (default: the first three)

- grid: the epoch grid in one pass (snapshots at 2, 4, 6, 8, 10) against five separate runs
  of 2, 4, 6, 8 and 10 epochs (what a grid costs without snapshots), same model and data.
  Target: separate / one pass >= 2.5x. Also the one pass against ONE run of 10 epochs (the
  snapshots' own cost), each timed twice, alternating, fastest counts (wall clock and CPU time
  of the process, the latter robust to a busy machine). Target: ratio <= 1.05.
- pipeline: steady-state training images/s of ResNet-18 (full width) at 140x128 fed by the
  tf.data pipeline decoding 440x400 JPEG files, against the same model fed an in-memory
  float32 array, one epoch of each in alternation (a busy machine slows both alike). Round 1
  (tracing) is excluded; the medians of the other rounds count.
  Target: pipeline >= 0.9x in-memory.
- memory: peak resident memory (ru_maxrss of a fresh subprocess per size and way) while
  training a tiny model at 440x400 on 300, 1000 and 3000 JPEG frames of 440x400: streaming
  (ours) against the authors' way (every frame read, resized and min-max scaled into one
  float64 NumPy array, then `fit(validation_split=0.2)`). Target: ours at 3000 frames <= 1.2x
  ours at 300; theirs grows with the frames (printed, with MiB per 1000 frames).
- profile: one epoch of each Pgds architecture with the `default` profile on the default
  phantom (on-the-fly 2x/6x augmentation), extrapolated to the profile's 20 epochs.

Prints every figure, PASS/FAIL per target; exits 1 on any FAIL. Frames go to a temp folder.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from reproduce import config as cfg  # noqa: E402

CLASSES = ("normal", "genetic_disease")
GRID_RATIO_MAX, SEPARATE_RATIO_MIN, PIPELINE_RATIO_MIN, MEMORY_RATIO_MAX = 1.05, 2.5, 0.9, 1.2


def write_frames(folder: Path, n: int, size_wh=(440, 400), seed: int = 0, start: int = 0) -> list[Path]:
    """Speckled ultrasound-like JPEG frames (a bright blob marks half of them)."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size_wh
    paths = []
    for i in range(start, start + n):
        path = folder / f"frame_{i:05d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng([seed, i])
        base = cv2.resize((rng.random((height // 8, width // 8)) * 160).astype(np.uint8), (width, height))
        speckle = rng.rayleigh(0.35, (height, width))
        image = np.clip(base * speckle + 20, 0, 255).astype(np.uint8)
        if i % 2:
            cv2.circle(image, (int(rng.integers(60, width - 60)), int(rng.integers(60, height - 60))), 25, 230, -1)
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return paths


def table_of(paths):
    from reproduce.input_pipeline import ImageTable

    return ImageTable(tuple(str(p) for p in paths), np.array([i % 2 for i in range(len(paths))]))


def tiny_builder(config, input_shape, num_classes):
    import keras

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 7, strides=4, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Activation("softmax", dtype="float32")(keras.layers.Dense(num_classes)(x))
    return keras.Model(inputs, outputs)


# ----------------------------------------------------------------------------- grid


def bench_grid(work: Path) -> bool:
    from reproduce import train

    paths = write_frames(work / "frames", 224)
    train_table, val_table = table_of(paths[:192]), table_of(paths[192:])
    grid, longest = (2, 4, 6, 8, 10), (10,)

    def run(epoch_grid, name) -> tuple[float, float]:
        config = cfg.make_config("pgds", "resnet18", "ci", size_wh=(140, 128), width=8, batch_size=32,
                                 epoch_grid=epoch_grid, augment="none")
        run_dir = work / name
        shutil.rmtree(run_dir, ignore_errors=True)
        start, cpu = time.perf_counter(), time.process_time()
        train.train_run(config, train_table, val_table, CLASSES, run_dir, verbose=0)
        return time.perf_counter() - start, time.process_time() - cpu

    times = {"grid": [], "single": []}
    cpu = {"grid": [], "single": []}
    for _ in range(2):
        for name, epoch_grid in (("single", longest), ("grid", grid)):
            wall, used = run(epoch_grid, name)
            times[name].append(wall)
            cpu[name].append(used)
    separate = [run((epochs,), f"separate_{epochs}") for epochs in grid]
    separate_s, separate_cpu = sum(w for w, _ in separate), sum(c for _, c in separate)
    grid_s, single_s = min(times["grid"]), min(times["single"])
    ratio = grid_s / single_s
    cpu_ratio = min(cpu["grid"]) / min(cpu["single"])
    separate_ratio = separate_s / grid_s
    separate_ok = separate_ratio >= SEPARATE_RATIO_MIN or separate_cpu / min(cpu["grid"]) >= SEPARATE_RATIO_MIN
    ok = (ratio <= GRID_RATIO_MAX or cpu_ratio <= GRID_RATIO_MAX) and separate_ok
    # The only extra work of the grid is copying the checkpoint to snapshots/ at grid epochs:
    # time that copy directly (robust to a busy machine), plus what the logs say.
    checkpoint = work / "grid" / "snapshots" / f"epoch_{max(grid):04d}.keras"
    copies = []
    for attempt in range(5):
        start = time.perf_counter()
        train._copy_atomic(checkpoint, work / "grid" / f"copy_{attempt}.keras")
        copies.append(time.perf_counter() - start)
    copy_s = statistics.median(copies)
    print(f"grid: one snapshot = one copy of a {checkpoint.stat().st_size / 2 ** 20:.1f} MiB checkpoint, "
          f"{copy_s * 1000:.1f} ms; {len(grid)} snapshots add {len(grid) * copy_s:.3f} s = "
          f"{len(grid) * copy_s / single_s * 100:.2f} % of the single run (bound: ratio "
          f"{1 + len(grid) * copy_s / single_s:.4f})")
    print(f"grid: snapshots at {grid} in one {max(grid)}-epoch run {grid_s:.1f} s vs one {max(grid)}-epoch run {single_s:.1f} s "
          f"(all: grid {['%.1f' % t for t in times['grid']]}, single {['%.1f' % t for t in times['single']]})")
    print(f"grid: CPU seconds of this process: grid {min(cpu['grid']):.1f}, single {min(cpu['single']):.1f}, "
          f"ratio {cpu_ratio:.3f} (robust to other load; load average {os.getloadavg()[0]:.1f})")
    print(f"grid: snapshots cost: wall ratio {ratio:.3f} against one {max(grid)}-epoch run "
          f"(target <= {GRID_RATIO_MAX})")
    print(f"grid: five separate runs ({'+'.join(str(e) for e in grid)} = {sum(grid)} epochs) "
          f"{separate_s:.1f} s wall, {separate_cpu:.1f} CPU s; one pass {grid_s:.1f} s wall, "
          f"{min(cpu['grid']):.1f} CPU s")
    print(f"grid: ratio separate / one pass {separate_ratio:.2f}x (CPU {separate_cpu / min(cpu['grid']):.2f}x; "
          f"target >= {SEPARATE_RATIO_MIN})  {'PASS' if ok else 'FAIL'}")
    return ok


# ----------------------------------------------------------------------------- pipeline


def bench_pipeline(work: Path, n_images: int = 256, rounds: int = 5) -> bool:
    """Two identical models train epoch by epoch in alternation (in-memory, then streaming),
    so a busy machine slows both alike; round 1 (tracing) is dropped, medians compared."""
    from reproduce import input_pipeline as pipe
    from reproduce import train

    paths = write_frames(work / "frames", n_images)
    table = table_of(paths)
    config = cfg.make_config("pgds", "resnet18", "ci", size_wh=(140, 128), width=64, batch_size=32,
                             epoch_grid=(rounds,), augment="none")
    spec = pipe.PipelineSpec(size_wh=(140, 128), channels=1, num_classes=2)
    x = pipe.materialize(table, spec)
    y = np.eye(2, dtype=np.float32)[table.labels]
    with train.numerics(config):
        in_memory_model = train.build_and_compile(config, 2)
        streaming_model = train.build_and_compile(config, 2)
        memory_rates, stream_rates, memory_cpu, stream_cpu = [], [], [], []
        for epoch in range(rounds):
            start, cpu = time.perf_counter(), time.process_time()
            in_memory_model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
            memory_rates.append(n_images / (time.perf_counter() - start))
            memory_cpu.append(n_images / (time.process_time() - cpu))
            dataset, steps = pipe.train_dataset(table, spec, batch_size=32, seed=0, start_epoch=epoch,
                                                end_epoch=epoch + 1)
            start, cpu = time.perf_counter(), time.process_time()
            streaming_model.fit(dataset, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
            stream_rates.append(n_images / (time.perf_counter() - start))
            stream_cpu.append(n_images / (time.process_time() - cpu))
    memory_rate, stream_rate = statistics.median(memory_rates[1:]), statistics.median(stream_rates[1:])
    cpu_ratio = statistics.median(stream_cpu[1:]) / statistics.median(memory_cpu[1:])
    paired = statistics.median(s / m for s, m in zip(stream_rates[1:], memory_rates[1:]))
    # Decoding alone, for scale: how fast the pipeline could feed a free model.
    dataset, _ = pipe.train_dataset(table, spec, batch_size=32, seed=0, start_epoch=0, end_epoch=2)
    for count, _ in enumerate(dataset):
        if count == len(table) // 32:  # second epoch: functions traced, threads warm
            start = time.perf_counter()
    decode_rate = (count + 1 - len(table) // 32) * 32 / (time.perf_counter() - start)
    ratio = stream_rate / memory_rate
    ok = ratio >= PIPELINE_RATIO_MIN
    print(f"pipeline: ResNet-18 (width 64) at 140x128, batch 32, {n_images} images/epoch, rounds 2-{rounds}")
    print(f"pipeline: in-memory {memory_rate:.1f} img/s {['%.1f' % r for r in memory_rates]}; "
          f"tf.data from 440x400 JPEG {stream_rate:.1f} img/s {['%.1f' % r for r in stream_rates]}; "
          f"decode+resize alone {decode_rate:.0f} img/s")
    print(f"pipeline: images per CPU-second of this process: in-memory {statistics.median(memory_cpu[1:]):.2f}, "
          f"streaming {statistics.median(stream_cpu[1:]):.2f}, ratio {cpu_ratio:.3f} (what an idle machine "
          f"would show when training is compute-bound; load average now {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores)")
    print(f"pipeline: ratio {ratio:.3f} (median of paired rounds {paired:.3f}; target >= {PIPELINE_RATIO_MIN})  "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


# ----------------------------------------------------------------------------- memory


def authors_arrays(paths) -> tuple[np.ndarray, np.ndarray]:
    """The authors' loading: each frame read as 8-bit grey, resized to 440x400, min-max scaled
    on its own, all of them stacked into one float64 array (NumPy's default for the division)."""
    frames = []
    for path in paths:
        image = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (440, 400))
        low, high = float(image.min()), float(image.max())
        frames.append((image - low) / (high - low if high > low else 1.0))
    x = np.array(frames)[..., None]
    y = np.eye(2)[[i % 2 for i in range(len(paths))]]
    return x, y


def memory_child(folder: Path, n: int, run_dir: Path, way: str = "streaming") -> None:
    """Train one epoch on n frames (streaming: 90 % train, 10 % val; authors: one float64
    array, validation_split 0.2); print peak RSS (MiB)."""
    import threading

    import psutil

    from reproduce import train

    process, peak = psutil.Process(), [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    paths = sorted(folder.glob("frame_*.jpg"))[:n]
    n_val = n // 10
    config = cfg.make_config("pgds", "tiny", "ci", size_wh=(440, 400), batch_size=32, epoch_grid=(1,),
                             augment="none")
    start = time.perf_counter()
    if way == "authors":
        import keras

        x, y = authors_arrays(paths)
        model = tiny_builder(config, (400, 440, 1), 2)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
        model.fit(x, y, batch_size=32, epochs=1, validation_split=0.2, verbose=0)
    else:
        train.train_run(config, table_of(paths[n_val:]), table_of(paths[:n_val]), CLASSES, run_dir,
                        builder=tiny_builder, verbose=0)
    stop.set()
    maxrss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "maxrss_mib": maxrss_mib, "sampled_peak_mib": peak[0] / 2 ** 20,
                      "seconds": time.perf_counter() - start}))


def bench_memory(work: Path, sizes=(300, 1000, 3000)) -> bool:
    folder = work / "frames_memory"
    print(f"memory: writing {max(sizes)} JPEG frames of 440x400 ...", flush=True)
    write_frames(folder, max(sizes), seed=1)
    results = {}
    for way in ("streaming", "authors"):
        for n in sizes:
            out = subprocess.run([sys.executable, __file__, "--memory-child", str(folder), str(n),
                                  str(work / f"mem_{way}_{n}"), way],
                                 capture_output=True, text=True, cwd=REPO, timeout=3600)
            if out.returncode != 0:
                print(out.stdout[-2000:], out.stderr[-4000:])
                return False
            results[way, n] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"memory: {way:9s} {n:5d} frames: peak RSS {results[way, n]['maxrss_mib']:6.0f} MiB "
                  f"(ru_maxrss), {results[way, n]['sampled_peak_mib']:6.0f} MiB (sampled), "
                  f"{results[way, n]['seconds']:.0f} s", flush=True)
    ours = [results["streaming", n]["maxrss_mib"] for n in sizes]
    theirs = [results["authors", n]["maxrss_mib"] for n in sizes]
    ratio = ours[-1] / ours[0]
    slope = (theirs[-1] - theirs[0]) / (sizes[-1] - sizes[0]) * 1000
    ok = ratio <= MEMORY_RATIO_MAX
    print(f"memory: authors' way grows {slope:.0f} MiB per 1000 frames (a float64 frame of 440x400 "
          f"is {400 * 440 * 8 / 2 ** 20:.2f} MiB); at {sizes[-1]} frames theirs / ours "
          f"{theirs[-1] / ours[-1]:.2f}x")
    print(f"memory: ours {sizes[-1]}/{sizes[0]} frames {ratio:.3f} (target <= {MEMORY_RATIO_MAX})  "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


# ----------------------------------------------------------------------------- default profile


def bench_profile(work: Path) -> bool:
    from data_prep import phantom
    from data_prep.splits import case_level_split

    from reproduce import train

    manifest_path = phantom.generate_phantom("pgds", "default", work / "phantom_default", seed=0, progress=False) \
        if not (work / "phantom_default" / "manifest.csv").exists() else work / "phantom_default" / "manifest.csv"
    manifest = train.load_manifest(manifest_path, labels=CLASSES)
    splits = case_level_split(manifest, test_size=0.2, val_size=0.1, seed=0)
    train_table, val_table = train.fold_tables(manifest, splits, CLASSES, "splits")[0]
    total = 0.0
    for architecture in cfg.STUDIES["pgds"].architectures:
        config = cfg.make_config("pgds", architecture, "default", epoch_grid=(2,))
        run_dir = work / "profile" / architecture
        shutil.rmtree(run_dir, ignore_errors=True)
        train.train_run(config, train_table, val_table, CLASSES, run_dir, verbose=0)
        import pandas as pd

        log = pd.read_csv(run_dir / "log.csv")
        epoch_s = float(log["seconds"].iloc[-1] + log["checkpoint_seconds"].iloc[-1])
        full = epoch_s * cfg.PROFILES["default"].epoch_grid[-1]
        total += full
        print(f"profile default: {architecture}: {len(train_table)} train images "
              f"({log['images_per_s'].iloc[-1]:.0f} img/s), epoch {epoch_s:.1f} s -> "
              f"{cfg.PROFILES['default'].epoch_grid[-1]} epochs ~ {full / 60:.1f} min", flush=True)
    print(f"profile default: four architectures ~ {total / 60:.1f} min of training (tracing excluded)")
    return True


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        memory_child(Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]),
                     sys.argv[5] if len(sys.argv) > 5 else "streaming")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benches", nargs="*", metavar="BENCH",
                        help="grid, pipeline, memory, profile (default: grid pipeline memory)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    args = parser.parse_args()
    benches = args.benches or ["grid", "pipeline", "memory"]
    functions = {"grid": bench_grid, "pipeline": bench_pipeline, "memory": bench_memory, "profile": bench_profile}
    unknown = [name for name in benches if name not in functions]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(functions)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_train_"))
    work.mkdir(parents=True, exist_ok=True)
    results = [functions[name](work) for name in benches]
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
