"""The embedded demo end to end at a miniature size, and the points drawn on frames."""

import numpy as np
import pytest
from PIL import Image

from ila_hf.demo import DemoConfig, format_report, render_video, run_demo
from ila_hf.visualize import point_to_pixel


def test_miniature_demo_trains_both_models_classifies_a_heldout_mp4_and_draws_the_points(tmp_path):
    config = DemoConfig(
        output_dir=str(tmp_path),
        motions=("moving_left", "moving_right"),
        train_videos_per_class=8,
        test_videos_per_class=2,
        epochs=1,
        batch_size=8,
    )
    result = run_demo(config, log=lambda *args: None)

    assert [report.name for report in result.reports] == ["ILA", "frame averaging"]
    assert all(0.0 <= report.accuracy <= 1.0 and report.steps == 2 for report in result.reports)
    assert result.chance == 0.5
    assert result.true_label in config.motions and result.video_path.endswith(".mp4")
    assert sorted(item["label"] for item in result.pipeline_output) == sorted(config.motions)
    assert sum(item["score"] for item in result.pipeline_output) == pytest.approx(1.0, abs=1e-4)
    with Image.open(result.points_image) as image:
        image.verify()
    report = format_report(result)
    assert "| ILA" in report and "| frame averaging" in report and "pipeline(" in report


def test_single_frames_do_not_tell_the_classes_apart():
    """Every class draws each frame's position from the same distribution: only the order differs."""
    rng = np.random.default_rng(0)
    left = np.stack([render_video("moving_left", rng, 16, 32) for _ in range(200)])
    right = np.stack([render_video("moving_right", rng, 16, 32) for _ in range(200)])
    assert left.shape == (200, 16, 32, 32, 3)
    np.testing.assert_allclose(left.mean(axis=(0, 1)), right.mean(axis=(0, 1)), atol=12)


@pytest.mark.parametrize(
    "point, pixel",
    [((-1.0, -1.0), (4.0, 4.0)), ((1.0, 1.0), (28.0, 28.0)), ((0.0, 0.0), (16.0, 16.0)), ((1.0, -1.0), (28.0, 4.0))],
)
def test_points_map_to_patch_centres(point, pixel):
    """-1 and +1 are the centres of the first and last patch (32 px image, 4 x 4 grid of 8 px patches)."""
    np.testing.assert_allclose(point_to_pixel(np.array(point), image_size=32, grid_size=4), pixel)
