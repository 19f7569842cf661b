"""Timelines of long 720p videos: one streaming pass (`ila_hf.timeline`) vs decoding every window separately.

Synthetic 720p H.264 videos of 1, 5 and 10 minutes are written once with PyAV and cached: a 10-second chunk (a
scrolling texture of 24-pixel squares, so every frame differs; x264 ultrafast, 10 fps, closed GOPs of 2 s) is encoded
once, and its packets are repeated with shifted timestamps up to the wanted length. Decoding costs what a real video
of that content costs (each GOP decodes on its own), while writing 10 minutes of 720p takes seconds instead of the
half hour x264 needs on a loaded 2-core machine. Each run happens in a fresh Python process, which reports windows/s
and how far its peak RSS rose above its level after loading the model:

- ``stream``: `ila_hf.timeline.iter_timeline` (each frame decoded once, preprocessed once, kept while a pending
  window needs it; 8 windows per forward pass).
- ``per window``: every window decoded on its own with `ila_hf.load_video` (seeking to its keyframe), preprocessed by
  `ILAVideoProcessor`, 8 windows per forward pass. Its cost per window does not depend on the video's length, so it
  runs on `--baseline-windows` windows spread evenly over the video (all of them if fewer).

10 fps rather than 25 and a stub model (a linear layer on each clip's mean colour, 400 classes) rather than ILA keep
the run within minutes on a loaded 2-core machine: the numbers measure decoding and preprocessing (short side 256,
centre crop 224, normalisation), which is what the two methods do differently; a real model adds the same forward
cost per window to both (the tiny random ILA of `tests` took about 0.2 s per window here, more than the rest).

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
import types
from datetime import datetime, timezone
from pathlib import Path

import av
import numpy as np
import torch
from bench_decode import cpu_model, write_benchmark_video

from ila_hf import ILAVideoProcessor, load_video, read_video_metadata
from ila_hf.inference import view_probabilities
from ila_hf.sampling import sliding_window_indices
from ila_hf.timeline import iter_timeline


WIDTH, HEIGHT, FPS, GOP_SECONDS, CHUNK_SECONDS = 1280, 720, 10, 2.0, 10
NUM_FRAMES, BATCH_SIZE = 8, 8


class MeanColourClassifier(torch.nn.Module):
    """A stand-in for the model with the interface `iter_timeline` uses (config, device, dtype, logits)."""

    def __init__(self, num_labels: int = 400):
        super().__init__()
        self.config = types.SimpleNamespace(
            num_frames=NUM_FRAMES, num_labels=num_labels, id2label={i: f"class {i}" for i in range(num_labels)}
        )
        self.classifier = torch.nn.Linear(3, num_labels)

    @property
    def device(self) -> torch.device:
        return self.classifier.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.classifier.weight.dtype

    def forward(self, pixel_values: torch.Tensor):  # (B, T, 3, H, W)
        return types.SimpleNamespace(logits=self.classifier(pixel_values.mean(dim=(1, 3, 4))))


def write_long_video(path: Path, minutes: int, chunk: Path) -> Path:
    """``minutes`` of video made of ``chunk``'s packets repeated, timestamps shifted by the chunk's length."""
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(chunk)) as source, av.open(str(partial), "w") as target:
        source_stream = source.streams.video[0]
        target_stream = target.add_stream_from_template(source_stream)
        packets = [packet for packet in source.demux(source_stream) if packet.size]
        shift = round(CHUNK_SECONDS / source_stream.time_base)
        for repetition in range(minutes * 60 // CHUNK_SECONDS):
            for packet in packets:
                copy = av.Packet(bytes(packet))
                copy.pts, copy.dts = packet.pts + repetition * shift, packet.dts + repetition * shift
                copy.time_base, copy.is_keyframe, copy.stream = packet.time_base, packet.is_keyframe, target_stream
                target.mux(copy)
    partial.rename(path)
    return path


def current_rss_kb() -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


def measure(method: str, path: Path, window: float, stride: float, baseline_windows: int) -> dict:
    """One run in this process (called in a fresh child by `main`)."""
    torch.manual_seed(0)
    model, processor = MeanColourClassifier().eval(), ILAVideoProcessor(num_frames=NUM_FRAMES)
    metadata = read_video_metadata(path)
    bounds, indices = sliding_window_indices(
        metadata.total_num_frames, NUM_FRAMES, round(window * metadata.fps), stride * metadata.fps
    )
    with torch.no_grad():  # warm-up of the forward pass, outside the measurement
        model(pixel_values=torch.zeros(BATCH_SIZE, NUM_FRAMES, 3, 224, 224))
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
        "peak_rss_growth_mb": max(0, peak_growth_kb) / 1024,
        "rss_before_mb": rss_before / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "ila_bench")
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--stride", type=float, default=1.0)
    parser.add_argument("--baseline-windows", type=int, default=32)
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
    chunk = args.cache_dir / f"texture_720p_{CHUNK_SECONDS}s_{FPS}fps_gop{GOP_SECONDS:g}s.mp4"
    if not chunk.exists():
        print(f"writing {chunk} ...", flush=True)
        write_benchmark_video(chunk, CHUNK_SECONDS, FPS, GOP_SECONDS, WIDTH, HEIGHT, block=24, preset="ultrafast")
    for minutes in args.minutes:
        path = args.cache_dir / f"texture_720p_{minutes}min_{FPS}fps_repeated_{CHUNK_SECONDS}s.mp4"
        if not path.exists():
            write_long_video(path, minutes, chunk)
        for method in args.methods:
            command = [
                sys.executable, __file__, "--child", method, str(path), "--window", str(args.window),
                "--stride", str(args.stride), "--baseline-windows", str(args.baseline_windows),
            ]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            row = json.loads(result.stdout.splitlines()[-1]) | {"video_bytes": path.stat().st_size}
            rows.append(row)
            print(
                f"{minutes:>3} min  {method:<10} {row['windows_per_second']:6.2f} windows/s  "
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
        "video": {
            "size": f"{WIDTH}x{HEIGHT}",
            "fps": FPS,
            "gop_seconds": GOP_SECONDS,
            "codec": "h264 ultrafast",
            "chunk_seconds": CHUNK_SECONDS,
        },
        "window": args.window,
        "stride": args.stride,
        "num_frames": NUM_FRAMES,
        "batch_size": BATCH_SIZE,
    }
    args.json.write_text(json.dumps({"environment": environment, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
