"""viz.images: the R(t) animation frames."""

from __future__ import annotations


def test_order_parameter_frames_draw_the_curve_up_to_each_frame() -> None:
    import numpy as np

    from kuramoto_diffusion.viz.images import order_parameter_frames

    steps = 12
    times = [1 - k / steps for k in range(steps + 1)]  # the reverse process runs from t/T = 1 to 0
    values = [0.2 + 0.6 * k / steps for k in range(steps + 1)]
    frames = order_parameter_frames(times, values, [f"t = {steps - k}" for k in range(steps + 1)])
    assert len(frames) == steps + 1
    assert {frame.size for frame in frames} == {frames[0].size}

    def line_columns(frame) -> np.ndarray:  # noqa: ANN001 - a PIL image
        pixels = np.asarray(frame).astype(int)
        blue = (abs(pixels[..., 0] - 0x1F) < 40) & (abs(pixels[..., 1] - 0x77) < 40) & (pixels[..., 2] > 140)
        blue[:, int(0.7 * frame.size[0]) :][:60] = False  # the legend's sample line, top right
        return np.flatnonzero(blue.any(axis=0))

    # The curve grows leftwards (towards t = 0) frame by frame, and the right end stays where t/T = 1 is.
    left_ends = [line_columns(frame).min() for frame in frames[1:]]
    assert all(a > b for a, b in zip(left_ends, left_ends[1:], strict=False)), left_ends
    right_ends = {line_columns(frame).max() for frame in frames[1:]}
    assert max(right_ends) - min(right_ends) <= 1
    assert len(line_columns(frames[0])) < len(line_columns(frames[-1])) / 5  # one point only: at most a dot
