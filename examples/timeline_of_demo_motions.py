"""A timeline of a long video, with a model trained by the demo recipe (the picture in the README).

1. `ila_hf.demo.run_demo` trains ILA on two of the synthetic motions, left and right (a short budget: 2 x 150 videos,
   6 epochs, about 60 steps; a few minutes on a CPU), and exports it with its video processor (skipped when
   ``--model`` names such a folder already).
2. A 40-second video is rendered at the demo's 8 fps: a shape moving left, right, left, then right, 10 seconds each
   (`demo.render_video`, each part a new random shape and colours).
3. `ila_hf.predict_timeline` classifies 2-second windows (the demo's clip length) every second; the segments are
   printed and the picture saved.

    python examples/timeline_of_demo_motions.py --output-dir timeline-demo --image docs/timeline.png
"""

import argparse
from pathlib import Path

import numpy as np
from transformers import AutoModelForVideoClassification, AutoVideoProcessor

from ila_hf import predict_timeline
from ila_hf.demo import DemoConfig, render_video, run_demo, write_mp4


MOTIONS = ("moving_left", "moving_right")
PARTS = ("moving_left", "moving_right", "moving_left", "moving_right")
FPS = 8  # the demo's videos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("timeline-demo"))
    parser.add_argument("--model", type=Path, help="an exported demo model (default: train one in OUTPUT_DIR/demo)")
    parser.add_argument("--seconds-per-part", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2, help="of the rendered video's shapes and colours")
    parser.add_argument("--image", type=Path, help="where to save the picture (default: OUTPUT_DIR/timeline.png)")
    args = parser.parse_args()

    config = DemoConfig(
        output_dir=str(args.output_dir / "demo"),
        motions=MOTIONS,
        train_videos_per_class=150,
        test_videos_per_class=16,
        epochs=6,
    )
    model_dir = args.model or Path(run_demo(config).model_dir)
    model = AutoModelForVideoClassification.from_pretrained(model_dir).eval()
    processor = AutoVideoProcessor.from_pretrained(model_dir)

    rng = np.random.default_rng(args.seed)
    frames = np.concatenate(
        [render_video(part, rng, args.seconds_per_part * FPS, config.frame_size) for part in PARTS]
    )
    video = write_mp4(args.output_dir / "left_right_left_right.mp4", frames, fps=FPS)

    timeline = predict_timeline(model, processor, video, window=2.0, stride=1.0, progress=True)
    print(f"true parts: {', '.join(PARTS)}, {args.seconds_per_part} s each")
    for segment in timeline.segments():
        print(f"{segment.start:6.1f} - {segment.end:6.1f} s  {segment.label:<14} {segment.score:.2f}")
    image = args.image or args.output_dir / "timeline.png"
    timeline.save_image(image, width=900)
    print(f"wrote {image}")


if __name__ == "__main__":
    main()
