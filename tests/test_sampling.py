"""Frame sampling plans against the released rules (docs/computation.md, "Notes on the released evaluation")."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ila_hf.sampling import (
    dense_indices,
    multi_view_dense_indices,
    multi_view_segment_indices,
    sample_frame_indices,
    segment_indices,
    sliding_window_indices,
)


def released_segment_bounds(num_video_frames: int, num_frames: int) -> list[tuple[int, int]]:
    """The released loop, scalar by scalar: seg = (n - 1) / T, start/end = round(seg * i), round(seg * (i + 1))."""
    segment_length = float(num_video_frames - 1) / num_frames
    return [(round(segment_length * i), round(segment_length * (i + 1))) for i in range(num_frames)]


# ---------------------------------------------------------------- single-view segment sampling
def test_segment_evaluation_worked_example_n30_t8():
    # seg = 29 / 8 = 3.625; starts round(0, 3.625, 7.25, 10.875, 14.5, ...) = 0 4 7 11 14 18 22 25,
    # ends = 4 7 11 14 18 22 25 29; (start + end) // 2:
    assert segment_indices(30, 8).tolist() == [2, 5, 9, 12, 16, 20, 23, 27]


def test_segment_rounding_is_half_to_even():
    # 14.5 rounds to 14 (half-up would give 15 and make the fourth index (11 + 15) // 2 = 13).
    assert segment_indices(30, 8)[3] == 12


def test_segment_evaluation_matches_released_loop_for_many_lengths():
    for num_video_frames in range(1, 400, 7):
        for num_frames in (1, 3, 8, 16, 32):
            expected = [(start + end) // 2 for start, end in released_segment_bounds(num_video_frames, num_frames)]
            assert segment_indices(num_video_frames, num_frames).tolist() == expected


def test_segment_training_draws_each_frame_of_its_segment_inclusive():
    generator = np.random.default_rng(0)
    draws = np.stack([segment_indices(30, 8, random=True, generator=generator) for _ in range(2000)])
    for i, (start, end) in enumerate(released_segment_bounds(30, 8)):
        assert set(draws[:, i].tolist()) == set(range(start, end + 1))


def test_segment_training_is_reproducible_from_a_seed():
    first = segment_indices(300, 8, random=True, generator=123)
    again = segment_indices(300, 8, random=True, generator=np.random.default_rng(123))
    other = segment_indices(300, 8, random=True, generator=124)
    assert first.tolist() == again.tolist()
    assert first.tolist() != other.tolist()


def test_segment_on_a_video_shorter_than_the_clip_repeats_frames():
    # n = 3, T = 8: seg = 0.25, starts 0 0 0 1 1 1 2 2, ends 0 0 1 1 1 2 2 2.
    assert segment_indices(3, 8).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]


def test_every_plan_of_a_one_frame_video_is_frame_zero():
    assert segment_indices(1, 8).tolist() == [0] * 8
    assert segment_indices(1, 8, random=True, generator=0).tolist() == [0] * 8
    assert dense_indices(1, 8, 4).tolist() == [0] * 8
    assert multi_view_segment_indices(1, 8, 4).tolist() == [[0] * 8] * 4
    assert multi_view_dense_indices(1, 8, 4, 2).tolist() == [[0] * 8] * 2


@pytest.mark.parametrize("plan", [segment_indices, dense_indices])
def test_an_empty_video_is_rejected(plan):
    with pytest.raises(ValueError, match="num_video_frames.*got 0"):
        plan(0, 8)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_num_frames_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="num_frames"):
        segment_indices(30, bad)


def test_plans_return_int64_arrays():
    assert segment_indices(30, 8).dtype == np.int64
    assert segment_indices(30, 8, random=True, generator=0).dtype == np.int64
    assert dense_indices(30, 8).dtype == np.int64
    assert multi_view_segment_indices(30, 8, 4).dtype == np.int64
    assert multi_view_dense_indices(300, 8, 2, 3).dtype == np.int64


@settings(max_examples=200, deadline=None)
@given(
    num_video_frames=st.integers(1, 5000),
    num_frames=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
)
def test_segment_indices_stay_in_their_segments_and_in_range(num_video_frames, num_frames, seed):
    bounds = np.array(released_segment_bounds(num_video_frames, num_frames))
    for indices in (
        segment_indices(num_video_frames, num_frames),
        segment_indices(num_video_frames, num_frames, random=True, generator=seed),
    ):
        assert indices.shape == (num_frames,)
        assert np.all((bounds[:, 0] <= indices) & (indices <= bounds[:, 1]))
        assert np.all((0 <= indices) & (indices < num_video_frames))
        assert np.all(np.diff(indices) >= 0)


# ---------------------------------------------------------------- multi-view segment sampling
def test_multi_view_segment_worked_example_n30_t8_v4():
    # avg = 30 // 8 = 3; offsets floor((v + 0.5) * 3 / 4) = 0 1 1 2; index = 3 i + offset.
    expected = [[3 * i + offset for i in range(8)] for offset in (0, 1, 1, 2)]
    assert multi_view_segment_indices(30, 8, 4).tolist() == expected


def test_multi_view_segment_short_video_spreads_frames_like_the_released_code():
    # avg = 5 // 8 = 0 -> round(i * 5 / 8) = round(0, .625, 1.25, 1.875, 2.5, 3.125, 3.75, 4.375), every view.
    assert multi_view_segment_indices(5, 8, 2).tolist() == [[0, 1, 1, 2, 2, 3, 4, 4]] * 2


def test_multi_view_segment_short_video_is_clamped_to_the_last_frame():
    # round(7 * 3 / 8) = round(2.625) = 3 would be past the last frame (2).
    assert multi_view_segment_indices(3, 8, 1).tolist() == [[0, 0, 1, 1, 2, 2, 2, 2]]


def test_multi_view_segment_random_draws_inside_each_segment():
    indices = multi_view_segment_indices(100, 8, 4, random=True, generator=0)
    average_duration = 100 // 8
    segment_starts = average_duration * np.arange(8)
    assert indices.shape == (4, 8)
    assert np.all((segment_starts <= indices) & (indices < segment_starts + average_duration))
    assert len({tuple(view) for view in indices.tolist()}) > 1  # independent draws


def test_multi_view_views_are_evenly_staggered_and_distinct_on_long_videos():
    indices = multi_view_segment_indices(1000, 8, 4)
    assert np.all(np.diff(indices, axis=0) > 0)


# ---------------------------------------------------------------- dense sampling
def test_dense_evaluation_window_is_centred():
    # window = 7 * 4 + 1 = 29 frames; max start = 100 - 29 = 71; start = 35.
    assert dense_indices(100, 8, 4).tolist() == list(range(35, 64, 4))


def test_dense_training_start_is_uniform_over_all_valid_starts():
    generator = np.random.default_rng(0)
    starts = {int(dense_indices(40, 8, 4, random=True, generator=generator)[0]) for _ in range(1000)}
    assert starts == set(range(0, 40 - 29 + 1))


def test_dense_on_a_short_video_repeats_the_last_frame():
    assert dense_indices(10, 8, 4).tolist() == [0, 4, 8, 9, 9, 9, 9, 9]


def test_multi_view_dense_starts_are_evenly_spaced():
    # max start 71 -> 72 possible starts in 3 parts of 24 -> starts floor(12, 36, 60).
    indices = multi_view_dense_indices(100, 8, 4, 3)
    assert indices[:, 0].tolist() == [12, 36, 60]
    assert np.all(np.diff(indices, axis=1) == 4)


# ---------------------------------------------------------------- dispatcher
def test_sample_frame_indices_dispatches_to_each_plan():
    assert sample_frame_indices(30, 8).tolist() == segment_indices(30, 8).tolist()
    assert sample_frame_indices(30, 8, num_clips=4).tolist() == multi_view_segment_indices(30, 8, 4).tolist()
    assert sample_frame_indices(100, 8, "dense", frame_interval=4).tolist() == dense_indices(100, 8, 4).tolist()
    assert (
        sample_frame_indices(100, 8, "dense", frame_interval=4, num_clips=3).tolist()
        == multi_view_dense_indices(100, 8, 4, 3).tolist()
    )
    assert (
        sample_frame_indices(100, 8, random=True, generator=5).tolist()
        == segment_indices(100, 8, random=True, generator=5).tolist()
    )


def test_single_view_is_one_dimensional_and_multi_view_two_dimensional():
    assert sample_frame_indices(30, 8).shape == (8,)
    assert sample_frame_indices(30, 8, num_clips=2).shape == (2, 8)


def test_unknown_sampling_is_rejected_with_the_options():
    with pytest.raises(ValueError, match=r"one of \('segment', 'dense'\), got 'uniform'"):
        sample_frame_indices(30, 8, "uniform")


def test_random_multi_view_dense_sampling_is_rejected():
    with pytest.raises(ValueError, match="deterministic"):
        sample_frame_indices(100, 8, "dense", num_clips=2, random=True)


# ---------------------------------------------------------------- sliding windows (timelines)
def test_sliding_windows_cover_the_video_with_equal_windows_the_last_ending_with_it():
    bounds, indices = sliding_window_indices(260, 8, window_length=50, stride=25.0)
    assert bounds[:, 0].tolist() == [0, 25, 50, 75, 100, 125, 150, 175, 200, 210]
    assert (bounds[:, 1] - bounds[:, 0] == 50).all() and bounds[-1, 1] == 260
    np.testing.assert_array_equal(indices, bounds[:, :1] + segment_indices(50, 8))


def test_sliding_windows_with_a_fractional_stride_do_not_drift():
    bounds, _ = sliding_window_indices(36_000, 8, window_length=60, stride=29.97)  # 1 s windows starts at 29.97 fps
    assert bounds[1000, 0] == round(1000 * 29.97) and bounds[-1, 1] == 36_000


def test_a_video_shorter_than_the_window_is_one_window_of_the_whole_video():
    bounds, indices = sliding_window_indices(30, 8, window_length=50, stride=10.0)
    assert bounds.tolist() == [[0, 30]] and indices.tolist() == [segment_indices(30, 8).tolist()]


@pytest.mark.parametrize("stride", [0, -1.0, float("nan"), float("inf"), "1"])
def test_sliding_windows_need_a_positive_stride(stride):
    with pytest.raises(ValueError, match=r"`stride` must be a positive number of frames"):
        sliding_window_indices(100, 8, 10, stride)
