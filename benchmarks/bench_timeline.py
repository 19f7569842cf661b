"""Timelines of long 720p videos: one streaming pass (`ila_hf.timeline`) vs decoding every window separately.

Synthetic 720p H.264 videos of 1, 5 and 10 minutes (a scrolling texture of 24-pixel squares, so every frame differs;
x264 ultrafast, 25 fps, keyframe every 2 s) are written once with PyAV and cached. Each run happens in a fresh Python
process, which reports windows/s and how far its peak RSS rose above its level after loading the model:

- ``stream``: `ila_hf.timeline.iter_timeline` (each frame decoded once, preprocessed once, kept while a pending
  window needs it; 8 windows per forward pass).
- ``per window``: every window decoded on its own with `ila_hf.load_video` (seeking to its keyframe), preprocessed by
  `ILAVideoProcessor`, 8 windows per forward pass. Its cost per window does not depend on the video's length, so it
  runs on `--baseline-windows` windows spread evenly over the video (all of them if fewer).

The model is a tiny random ILA (2 layers of width 64, patch 32, 224x224 input, 8 frames, 400 classes) so that the
numbers measure decoding and preprocessing, which is what the two methods do differently; a real model adds the same
forward cost per window to both.

    python benchmarks/bench_timeline.py --minutes 1 5 10 --json benchmarks/results_timeline.json
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import av
import numpy as np
import torch
from bench_decode import cpu_model, write_benchmark_video

from ila_hf import ILAForVideoClassification, ILAVideoConfig, ILAVideoProcessor, load_video, read_video_metadata
from ila_hf.inference import view_probabilities
from ila_hf.sampling import sliding_window_indices
from ila_hf.timeline import iter_timeline


WIDTH, HEIGHT, FPS, GOP_SECONDS = 1280, 720, 25, 2.0
NUM_FRAMES, BATCH_SIZE = 8, 8


def tiny_model() -> ILAForVideoClassification:
    torch.manual_seed(0)
    config = ILAVideoConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=224,
        patch_size=32, projection_dim=64, num_frames=NUM_FRAMES, id2label={i: f"class {i}" for i in range(400)},
    )  # fmt: skip
    return ILAForVideoClassification(config).eval()


def current_rss_kb() -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


def measure(method: str, path: Path, window: float, stride: float, baseline_windows: int) -> dict:
    """One run in this process (called in a fresh child by `main`)."""
    model, processor = tiny_model(), ILAVideoProcessor(num_frames=NUM_FRAMES)
    metadata = read_video_metadata(path)
    bounds, indices = sliding_window_indices(
        metadata.total_num_frames, NUM_FRAMES, round(window * metadata.fps), stride * metadata.fps
    )
    with torch.no_grad():  # warm-up of the forward pass, outside the measurement
        model(pixel_values=torch.zeros(BATCH_SIZE, NUM_FRAMES, 3, 224, 224))
    model_seconds = []  # forward passes, timed apart: the same cost per window in both methods
    model.register_forward_pre_hook(lambda *_: model_seconds.append(-time.perf_counter()))
    model.register_forward_hook(lambda *_: model_seconds.append(time.perf_counter()))
    rss_before = current_rss_kb()
    start = time.perf_counter()
    if method == "stream":
        num_windows = sum(1 for _ in iter_timeline(model, processor, path, window=window, stride=stride))
    else:
        chosen = np.unique(np.linspace(0, len(indices) - 1, min(baseline_windows, len(indices))).round().astype(int))
        for batch in np.array_split(chosen, max(1, len(chosen) // BATCH_SIZE)):
            clips = [
                processor(load_video(path, indices[k])[0], do_sample_frames=False, return_tensors="pt").pixel_values
                for k in batch
            ]
            view_probabilities(model, torch.cat(clips), max_batch_size=BATCH_SIZE)
        num_windows = len(chosen)
    seconds = time.perf_counter() - start
    peak_growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    return {
        "method": method,
        "video_minutes": metadata.total_num_frames / metadata.fps / 60,
        "windows_in_video": len(indices),
        "windows_measured": num_windows,
        "seconds": seconds,
        "windows_per_second": num_windows / seconds,
        "model_seconds": sum(model_seconds),
        "windows_per_second_without_model": num_windows / (seconds - sum(model_seconds)),
        "peak_rss_growth_mb": max(0, peak_growth_kb) / 1024,
        "rss_before_mb": rss_before / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "ila_bench")
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--stride", type=float, default=1.0)
    parser.add_argument("--baseline-windows", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=["stream", "per window"], choices=["stream", "per window"])
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results_timeline.json"))
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        torch.set_num_threads(2)
        print(json.dumps(measure(args.child[0], Path(args.child[1]), args.window, args.stride, args.baseline_windows)))
        return

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for minutes in args.minutes:
        path = args.cache_dir / f"texture_720p_{minutes}min_{FPS}fps_gop{GOP_SECONDS:g}s.mp4"
        if not path.exists():
            print(f"writing {path} ...", flush=True)
            write_benchmark_video(path, minutes * 60, FPS, GOP_SECONDS, WIDTH, HEIGHT, block=24, preset="ultrafast")
        for method in args.methods:
            command = [
                sys.executable, __file__, "--child", method, str(path), "--window", str(args.window),
                "--stride", str(args.stride), "--baseline-windows", str(args.baseline_windows),
            ]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            row = json.loads(result.stdout.splitlines()[-1]) | {"video_bytes": path.stat().st_size}
            rows.append(row)
            print(
                f"{minutes:>3} min  {method:<10} {row['windows_per_second']:6.2f} windows/s "
                f"({row['windows_per_second_without_model']:6.2f} without the model)  "
                f"peak RSS +{row['peak_rss_growth_mb']:.0f} MB  ({row['windows_measured']} windows)",
                flush=True,
            )
    environment = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "load_average_1min": os.getloadavg()[0],
        "torch_threads": 2,
        "pyav": av.__version__,
        "torch": torch.__version__,
        "video": {"size": f"{WIDTH}x{HEIGHT}", "fps": FPS, "gop_seconds": GOP_SECONDS, "codec": "h264 ultrafast"},
        "window": args.window,
        "stride": args.stride,
        "num_frames": NUM_FRAMES,
        "batch_size": BATCH_SIZE,
    }
    args.json.write_text(json.dumps({"environment": environment, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
