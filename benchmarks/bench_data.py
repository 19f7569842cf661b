"""Training input pipeline throughput (decode + augmentation + collate) by source and data-loader workers, and
per-clip decode time of our PyAV reader against decord and torchcodec on the same frame plans.

Kinetics-like videos (10 s, 340x256, 30 fps, H.264, keyframe every 250 or 30 frames; a scrolling texture, written
with PyAV) are read three ways, each through `ila_hf.data.build_dataset`:
- a folder of class folders (paths),
- a parquet file holding the videos' bytes (a map-style `Dataset`),
- WebDataset tar shards streamed with `VideoBatchStream`.
Each batch is the released training recipe's: 8 frames per clip (a random frame per TSN segment),
`TrainClipTransform(224)` and Mixup/CutMix in `VideoClassificationCollator`. Sources whose rows are bytes need
`load_video` to read bytes; where it does not (yet), those rows are reported as not run.

The decode comparison reads the same files with the same plans (the evaluation plan and seeded training plans):
`ila_hf.video_io.load_video` from the path and from the bytes in memory, decord's `VideoReader.get_batch` and
torchcodec's `VideoDecoder.get_frames_at`, each only when it is installed (neither is a dependency). Every reader
uses FFmpeg's automatic thread count (ours sets `thread_type="AUTO"`; decord `num_threads=0`; torchcodec
`num_ffmpeg_threads=0`), and each call opens the video, as a data-loader worker does for every clip.

    python benchmarks/bench_data.py --markdown benchmarks/RESULTS_data.md --json benchmarks/results_data.json
    python benchmarks/bench_data.py --fast      # seconds: tiny videos, one batch per row (used by the tests)
"""

import argparse
import io
import json
import os
import platform
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Video
from torch.utils.data import DataLoader

from ila_hf.data import MixupCutmix, VideoBatchStream, VideoClassificationCollator, VideoClipTransform, build_dataset
from ila_hf.sampling import segment_indices
from ila_hf.transforms import TrainClipTransform
from ila_hf.video_io import load_video, read_video_metadata


sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling decode benchmark's video writer
from bench_decode import cpu_model, write_benchmark_video  # noqa: E402


FULL = dict(seconds=10, fps=30, width=340, height=256, copies=8, batch_size=4, crop=224, decode_clips=10)
FAST = dict(seconds=2, fps=30, width=96, height=64, copies=2, batch_size=2, crop=32, decode_clips=2)
GOPS = (250, 30)
NUM_FRAMES = 8


def write_sources(folder: Path, settings: dict) -> dict[str, Path]:
    """One video per GOP, copied `copies` times into class folders, a bytes-only parquet file and 2 tar shards."""
    videos = []
    for gop in GOPS:
        path = folder / f"gop{gop}.mp4"
        write_benchmark_video(
            path, settings["seconds"], settings["fps"], gop / settings["fps"], settings["width"], settings["height"]
        )
        videos += [(path, f"gop{gop}")] * settings["copies"]
    classes = sorted({name for _, name in videos})
    for index, (path, name) in enumerate(videos):
        (folder / "folder" / name).mkdir(parents=True, exist_ok=True)
        (folder / "folder" / name / f"{index}.mp4").write_bytes(path.read_bytes())
    rows = {
        "video": [{"bytes": path.read_bytes(), "path": None} for path, _ in videos],
        "label": [classes.index(name) for _, name in videos],
    }
    Dataset.from_dict(rows, features=Features({"video": Video(), "label": ClassLabel(names=classes)})).to_parquet(
        folder / "videos.parquet"
    )
    (folder / "shards").mkdir()
    for shard in range(2):
        with tarfile.open(folder / "shards" / f"shard-{shard}.tar", "w") as tar:
            for index, (path, name) in enumerate(videos[shard::2]):
                for suffix, payload in (("mp4", path.read_bytes()), ("cls", b"%d" % classes.index(name))):
                    info = tarfile.TarInfo(f"{shard}_{index}.{suffix}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return {"folder": folder / "folder", "parquet": folder / "videos.parquet", "tar shards": folder / "shards"}


def reads_bytes() -> bool:
    """Whether `load_video` takes a datasets video dict holding bytes (the parquet and tar rows)."""
    try:
        load_video({"path": None, "bytes": b""}, [0])
    except TypeError:
        return False
    except Exception:  # an empty video is undecodable: the dict itself was accepted
        return True
    return True


def pipeline_row(source: str, path: Path, num_workers: int, settings: dict, max_batches: int | None) -> dict:
    """Clips/s of building batches from `source` with `num_workers` data-loader workers (startup included)."""
    dataset = build_dataset(path, label_names=["gop250", "gop30"], streaming=source == "tar shards")
    transform = VideoClipTransform(TrainClipTransform(settings["crop"]), NUM_FRAMES, training=True, seed=0)
    collator = VideoClassificationCollator(MixupCutmix(2))
    if source == "tar shards":
        batches = VideoBatchStream(dataset, transform, collator, settings["batch_size"], num_workers=num_workers)
    else:
        batches = DataLoader(
            dataset.with_transform(transform),
            batch_size=settings["batch_size"],
            shuffle=True,
            collate_fn=collator,
            num_workers=num_workers,
            generator=torch.Generator().manual_seed(0),
        )
    clips, start = 0, time.perf_counter()
    for batch_index, batch in enumerate(batches):
        clips += batch["pixel_values"].shape[0]
        if max_batches is not None and batch_index + 1 == max_batches:
            break
    seconds = time.perf_counter() - start
    return {
        "source": source,
        "workers": num_workers,
        "clips": clips,
        "seconds": seconds,
        "clips_per_second": clips / seconds,
    }


def decoders() -> dict:
    """name -> (video path, its bytes, indices) -> frames, for every reader installed here."""
    readers = {
        "ila_hf (path)": lambda path, data, indices: load_video(path, indices)[0],
    }
    if reads_bytes():
        readers["ila_hf (bytes in memory)"] = lambda path, data, indices: load_video(
            {"path": None, "bytes": data}, indices
        )[0]
    try:
        import decord

        readers["decord"] = lambda path, data, indices: decord.VideoReader(str(path), num_threads=0).get_batch(
            list(indices)
        ).asnumpy()
    except ImportError:
        pass
    try:
        from torchcodec.decoders import VideoDecoder

        VideoDecoder  # the import alone can succeed while the FFmpeg libraries it needs are missing
        readers["torchcodec"] = lambda path, data, indices: VideoDecoder(str(path), num_ffmpeg_threads=0).get_frames_at(
            [int(index) for index in indices]
        ).data
    except (ImportError, OSError, RuntimeError):
        pass
    return readers


def decode_rows(folder: Path, settings: dict) -> list[dict]:
    """
    Median seconds per 8-frame clip for each reader, GOP and plan. Every clip's indices go to every reader in turn,
    so a change in the machine's load while the benchmark runs reaches all readers alike.
    """
    readers, rows = decoders(), []
    for gop in GOPS:
        path = folder / f"gop{gop}.mp4"
        data = path.read_bytes()
        total = read_video_metadata(path).total_num_frames
        rng = np.random.default_rng(0)
        plans = {
            "eval": [segment_indices(total, NUM_FRAMES)] * settings["decode_clips"],
            "train": [
                segment_indices(total, NUM_FRAMES, random=True, generator=rng) for _ in range(settings["decode_clips"])
            ],
        }
        for plan, clips in plans.items():
            seconds, errors = {}, {}
            for name, read in readers.items():
                try:
                    read(path, data, clips[0])  # warm-up, and a reader that cannot run here is left out
                    seconds[name] = []
                except Exception as error:  # noqa: BLE001 - a missing system library shows up only here
                    errors[name] = f"{type(error).__name__}: {error}"
            for indices in clips:
                for name in seconds:
                    start = time.perf_counter()
                    readers[name](path, data, indices)
                    seconds[name].append(time.perf_counter() - start)
            rows += [
                {"reader": name, "gop": gop, "plan": plan, "seconds_per_clip": float(np.median(times))}
                for name, times in seconds.items()
            ]
            rows += [{"reader": name, "gop": gop, "plan": plan, "error": error} for name, error in errors.items()]
    return rows


def run(fast: bool, workers: tuple[int, ...] = (0, 1, 2)) -> dict:
    settings = FAST if fast else FULL
    torch.set_num_threads(1)  # each data-loader worker runs one thread too
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        sources = write_sources(folder, settings)
        bytes_ok = reads_bytes()
        pipeline = []
        for source, path in sources.items():
            for num_workers in workers:
                if source != "folder" and not bytes_ok:
                    pipeline.append({"source": source, "workers": num_workers, "error": "load_video reads no bytes"})
                    continue
                pipeline.append(pipeline_row(source, path, num_workers, settings, 1 if fast else None))
        decode = decode_rows(folder, settings)
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}",
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "settings": settings,
        "pipeline": pipeline,
        "decode": decode,
    }


def markdown(results: dict) -> str:
    settings = results["settings"]
    lines = [
        "# Data pipeline: clips/s by source and workers, and decode time per clip by reader",
        "",
        f"`benchmarks/bench_data.py`, run {results['date']}; raw numbers in `results_data.json`.",
        "",
        f"- Machine: {results['machine']}, torch {results['torch']} (1 thread per process). 1/5/15-minute load "
        f"average at the end: {', '.join(f'{load:.1f}' for load in results['load_average'])}.",
        f"- Videos: {settings['seconds']} s, {settings['width']}x{settings['height']}, {settings['fps']} fps H.264, "
        f"keyframe every {' or '.join(map(str, GOPS))} frames, {settings['copies']} copies of each.",
        f"- Batches: {NUM_FRAMES} frames per clip (random frame per segment), TrainClipTransform({settings['crop']}), "
        f"Mixup/CutMix, batch size {settings['batch_size']}; clips/s over a whole epoch, worker startup included.",
        "",
        "| source | workers | clips | clips/s |",
        "|---|---:|---:|---:|",
    ]
    for row in results["pipeline"]:
        if "error" in row:
            lines.append(f"| {row['source']} | {row['workers']} | - | not run: {row['error']} |")
        else:
            lines.append(f"| {row['source']} | {row['workers']} | {row['clips']} | {row['clips_per_second']:.2f} |")
    lines += ["", "| reader | GOP | plan | ms per 8-frame clip (median) |", "|---|---:|---|---:|"]
    for row in results["decode"]:
        value = f"{1000 * row['seconds_per_clip']:.1f}" if "error" not in row else f"failed: {row['error']}"
        lines.append(f"| {row['reader']} | {row['gop']} | {row['plan']} | {value} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny videos, one batch per row")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()
    results = run(args.fast)
    text = markdown(results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
