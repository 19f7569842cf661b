"""Decode + preprocess throughput for 8-frame clips of a long 1080p video: seeking vs decoding every frame.

A synthetic 1080p H.264 video (moving texture, 25 fps, keyframe every `--gop-seconds`) is written once with
PyAV and cached. Each clip is one TSN segment plan (the evaluation plan, or a random training plan), decoded with
`ila_hf.video_io.load_video` with and without seeking, then preprocessed by `ILAVideoProcessor` (short side 256,
centre crop 224, normalisation). Prints a markdown table and writes the measurements as JSON.

    python benchmarks/bench_decode.py --clips 5 --json benchmarks/results_decode.json
"""

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import av
import numpy as np
import torch

from ila_hf.sampling import segment_indices
from ila_hf.video_io import load_video, read_video_metadata
from ila_hf.video_processing_ila import ILAVideoProcessor


def write_benchmark_video(
    path: Path,
    seconds: int,
    fps: int,
    gop_seconds: float,
    width: int,
    height: int,
    *,
    block: int = 8,
    preset: str = "veryfast",
) -> Path:
    """A texture of random ``block``-pixel squares scrolling diagonally (every frame differs, like camera motion),
    H.264 yuv420p (x264 ``preset``), fixed GOP."""
    rows, columns = -(-height // block), -(-width // block)
    texture = np.random.default_rng(0).integers(0, 256, (rows, columns, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((block, block, 1), dtype=np.uint8))[:height, :width]  # compressible, not trivial
    gop = round(gop_seconds * fps)
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {
            "preset": preset,
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
        }
        for index in range(seconds * fps):
            image = np.roll(texture, (index * 3, index * 5), axis=(0, 1))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    partial.rename(path)
    return path


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def run(path: Path, plan: str, seek: bool, clips: int, processor: ILAVideoProcessor, num_frames: int) -> dict:
    total_frames = read_video_metadata(path).total_num_frames
    rng = np.random.default_rng(0)
    decode_seconds, preprocess_seconds, decoded_frames = [], [], []
    for _ in range(clips):
        indices = segment_indices(total_frames, num_frames, random=plan == "train", generator=rng)
        start = time.perf_counter()
        frames, metadata = load_video(path, indices, seek=seek)
        decoded = time.perf_counter()
        processor(frames, do_sample_frames=False, return_tensors="pt")
        decode_seconds.append(decoded - start)
        preprocess_seconds.append(time.perf_counter() - decoded)
        decoded_frames.append(metadata.num_decoded_frames)
    seconds_per_clip = np.add(decode_seconds, preprocess_seconds)
    return {
        "plan": plan,
        "method": "seek" if seek else "decode every frame",
        "clips": clips,
        "clips_per_second": float(1 / seconds_per_clip.mean()),
        "seconds_per_clip_median": float(np.median(seconds_per_clip)),
        "decode_seconds_mean": float(np.mean(decode_seconds)),
        "preprocess_seconds_mean": float(np.mean(preprocess_seconds)),
        "decoded_frames_mean": float(np.mean(decoded_frames)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "ila_bench")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop-seconds", type=float, default=2.0)
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--clips", type=int, default=5, help="clips per row")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results_decode.json"))
    args = parser.parse_args()

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    path = args.cache_dir / f"texture_1080p_{args.seconds}s_{args.fps}fps_gop{args.gop_seconds:g}s.mp4"
    if not path.exists():
        print(f"writing {path} ...", flush=True)
        write_benchmark_video(path, args.seconds, args.fps, args.gop_seconds, 1920, 1080)
    metadata = read_video_metadata(path)
    processor = ILAVideoProcessor(num_frames=args.num_frames)

    load_video(path, [0])  # warm-up: imports, file cache
    rows = [
        run(path, plan, seek, args.clips, processor, args.num_frames)
        for plan in ("eval", "train")
        for seek in (True, False)
    ]
    environment = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "load_average_1min": os.getloadavg()[0],
        "torch_threads": torch.get_num_threads(),
        "pyav": av.__version__,
        "torch": torch.__version__,
        "video": {
            "file": path.name,
            "frames": metadata.total_num_frames,
            "fps": metadata.fps,
            "size": f"{metadata.width}x{metadata.height}",
            "gop_seconds": args.gop_seconds,
            "bytes": path.stat().st_size,
        },
        "num_frames": args.num_frames,
    }
    print(
        f"\n{metadata.total_num_frames} frames of {metadata.width}x{metadata.height} H.264, keyframe every "
        f"{args.gop_seconds:g} s; {args.num_frames}-frame TSN clips, ILAVideoProcessor 256 -> 224; "
        f"{environment['nproc']} x {environment['cpu']}, load {environment['load_average_1min']:.1f}\n"
    )
    print("| plan | method | clips/s | s/clip (median) | decode s | preprocess s | frames decoded/clip |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        cells = [
            row["plan"],
            row["method"],
            f"{row['clips_per_second']:.2f}",
            f"{row['seconds_per_clip_median']:.2f}",
            f"{row['decode_seconds_mean']:.2f}",
            f"{row['preprocess_seconds_mean']:.3f}",
            f"{row['decoded_frames_mean']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")
    args.json.write_text(json.dumps({"environment": environment, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
