"""diffsde.plots: each function returns a Figure that draws exactly the data it was given,
and saves a valid PNG atomically. Tiny inputs; no display (the figures never touch pyplot)."""

import math
import os

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import diffsde
from diffsde import plots, toys

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> None:
    """A PNG file: the 8-byte signature, then an IHDR chunk with positive width and height."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 0 and height > 0


def visible_axes(figure: Figure) -> list:
    return [ax for ax in figure.axes if ax.get_visible()]


def scatter_offsets(ax) -> list[np.ndarray]:
    return [np.asarray(collection.get_offsets()) for collection in ax.collections]


@pytest.fixture
def points(device):
    generator = torch.Generator(device=device).manual_seed(0)
    return torch.randn(50, 2, generator=generator, device=device)


def test_samples_vs_truth_draws_each_set_over_the_truth(points, tmp_path):
    truth = points + 1.0
    path = tmp_path / "samples.png"
    figure = plots.samples_vs_truth({"a": points, "b": 2 * points}, truth, path, max_points=30)
    assert isinstance(figure, Figure)
    axes = visible_axes(figure)
    assert [ax.get_title() for ax in axes] == ["a", "b"]
    for ax, expected in zip(axes, [points, 2 * points]):
        drawn_truth, drawn = scatter_offsets(ax)
        np.testing.assert_allclose(drawn_truth, truth[:30].cpu().numpy(), rtol=1e-6)
        np.testing.assert_allclose(drawn, expected[:30].cpu().numpy(), rtol=1e-6)
    assert_png(path)


def test_samples_vs_truth_in_1d_draws_density_histograms(tmp_path):
    x = np.linspace(-1.0, 1.0, 101)
    figure = plots.samples_vs_truth(x, x, bins=10)
    (ax,) = visible_axes(figure)
    bars = [patch for patch in ax.patches if isinstance(patch, Rectangle)]
    assert len(bars) == 10  # the truth's filled bars; the samples are one step outline
    # density=True: the bar areas sum to 1 (up to float rounding).
    assert sum(bar.get_height() * bar.get_width() for bar in bars) == pytest.approx(1.0, rel=1e-9)


def test_samples_vs_truth_without_truth_draws_the_samples_only(points):
    (ax,) = visible_axes(plots.samples_vs_truth(points, None))
    (drawn,) = scatter_offsets(ax)
    np.testing.assert_allclose(drawn, points.cpu().numpy(), rtol=1e-6)


def test_sample_paths_plots_every_path_against_time(device, tmp_path):
    generator = torch.Generator(device=device).manual_seed(1)
    trajectories = torch.randn(11, 5, 2, generator=generator, device=device)
    times = torch.linspace(10.0, 0.01, 11)
    figure = plots.sample_paths(trajectories, times, tmp_path / "paths.png", n_paths=3)
    plane, coordinates = figure.axes
    assert len(plane.lines) == 3  # one path per drawn sample, in the plane
    for k, line in enumerate(plane.lines):
        np.testing.assert_allclose(line.get_xydata(), trajectories[:, k].cpu().numpy(), rtol=1e-6)
    assert len(coordinates.lines) == 2 * 3  # both coordinates of each path against t
    np.testing.assert_allclose(coordinates.lines[0].get_xdata(), times.numpy(), rtol=1e-6)
    assert coordinates.get_xlim() == pytest.approx((10.0, 0.01))  # T on the left: the process runs left to right
    assert_png(tmp_path / "paths.png")


def test_marginal_densities_1d_are_the_exact_gaussian_densities(tmp_path):
    # p0 = N(1, 2): p_t = N(e^{-t/2}, e^{-t} 2 + 1 - e^{-t}) (the documentation's conventions page), evaluated in closed form here.
    score = diffsde.GaussianScore(torch.tensor([1.0], dtype=torch.float64), torch.tensor([[2.0]], dtype=torch.float64))
    times = [0.0, 0.5, 3.0]
    figure = plots.marginal_densities(score, times, tmp_path / "p.png", limits=(-5.0, 5.0), resolution=101)
    (ax,) = figure.axes
    assert len(ax.lines) == 3
    for line, t in zip(ax.lines, times):
        x, y = line.get_xdata(), line.get_ydata()
        mean, var = math.exp(-t / 2), 2 * math.exp(-t) + 1 - math.exp(-t)
        expected = np.exp(-(x - mean) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)
        np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert_png(tmp_path / "p.png")


def test_marginal_densities_2d_one_image_per_time():
    ring = toys.ring()
    figure = plots.marginal_densities(ring, [0.0, 1.0], limits=(-6.0, 6.0), resolution=21)
    axes = visible_axes(figure)
    assert [ax.get_title() for ax in axes] == ["p_t, t = 0", "p_t, t = 1"]
    image = axes[1].images[0].get_array()
    assert image.shape == (21, 21)
    # Pixel (row i, column j) is the density at (x_j, y_i) (origin="lower").
    axis = torch.linspace(-6.0, 6.0, 21, dtype=torch.float64)
    expected = torch.exp(ring.log_prob(torch.tensor([[axis[3], axis[17]]], dtype=torch.float64), 1.0))
    assert image[17, 3] == pytest.approx(float(expected), rel=1e-12)


def test_alpha_bar_vs_exp_draws_the_schedule_and_its_gap(tmp_path):
    schedule = diffsde.BetaSchedule.linear(40)
    figure = plots.alpha_bar_vs_exp(schedule, tmp_path / "a.png")
    values_ax, gap_ax = figure.axes
    exp_line, markers = values_ax.lines
    np.testing.assert_allclose(markers.get_xdata(), schedule.times.numpy()[::1])
    np.testing.assert_allclose(markers.get_ydata(), schedule.alpha_bars.numpy())
    np.testing.assert_allclose(exp_line.get_ydata(), np.exp(-exp_line.get_xdata()))
    (gap,) = gap_ax.lines
    gaps = np.abs(schedule.alpha_bars.numpy() - np.exp(-schedule.times.numpy()))
    np.testing.assert_allclose(gap.get_ydata(), gaps[gaps > 0])
    assert gap_ax.get_yscale() == "log"
    assert_png(tmp_path / "a.png")


def test_convergence_fits_the_slope_of_a_power_law(tmp_path):
    ns = np.array([10.0, 20.0, 40.0, 80.0])
    series = {"first": (ns, 3.0 / ns), "second": (ns, 5.0 / ns**2)}
    figure = plots.convergence(series, tmp_path / "c.png", floor=1e-4)
    (ax,) = figure.axes
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels[:2] == ["first (p = 1.00)", "second (p = 2.00)"]
    data_first, fit_first, data_second, fit_second, floor = ax.lines
    np.testing.assert_allclose(data_first.get_ydata(), 3.0 / ns)
    # An exact power law is fitted exactly: the dashed line goes through every point.
    np.testing.assert_allclose(fit_second.get_ydata(), 5.0 / ns**2, rtol=1e-10)
    np.testing.assert_allclose(floor.get_ydata(), [1e-4, 1e-4])
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert_png(tmp_path / "c.png")


def test_convergence_draws_given_orders():
    ns = np.array([10.0, 20.0, 40.0])
    (ax,) = plots.convergence({"m": (ns, 1.0 / ns)}, orders={"m": 2.0}).axes
    assert ax.get_legend().get_texts()[0].get_text() == "m (p = 2.00)"
    fitted = ax.lines[1].get_ydata()
    assert fitted[0] / fitted[-1] == pytest.approx(16.0)  # slope -2 over a factor 4 in n


def test_error_vs_nfe_sorts_by_nfe(tmp_path):
    figure = plots.error_vs_nfe({"m": ([40, 10, 20], [0.1, 0.4, 0.2])}, tmp_path / "e.png", floor=0.05)
    (ax,) = figure.axes
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [10, 20, 40])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.4, 0.2, 0.1])
    assert_png(tmp_path / "e.png")


def test_training_loss_running_mean(tmp_path):
    losses = torch.arange(10, dtype=torch.float32)
    figure = plots.training_loss(losses, tmp_path / "l.png", window=4)
    raw, running = figure.axes[0].lines
    np.testing.assert_allclose(raw.get_ydata(), losses.numpy())
    np.testing.assert_allclose(running.get_ydata(), np.arange(1.5, 8.0))  # mean of k..k+3 = k + 1.5
    np.testing.assert_allclose(running.get_xdata(), np.arange(4, 11))
    assert_png(tmp_path / "l.png")


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"old")
    plots.error_vs_nfe({"m": ([1, 2], [1.0, 0.5])}, path)
    assert_png(path)
    assert sorted(os.listdir(tmp_path)) == ["x.png"]
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()


def test_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"old")
    figure = plots.error_vs_nfe({"m": ([1, 2], [1.0, 0.5])})
    figure.axes[0].set_title("$\\unknowncommand$")  # mathtext fails while rendering, mid-save
    with pytest.raises(ValueError):
        plots.save_figure(figure, path)
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["x.png"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("call, match", [
    (lambda: plots.samples_vs_truth(torch.zeros(5, 3), torch.zeros(5, 3)), "shape"),
    (lambda: plots.samples_vs_truth(torch.zeros(5, 2), torch.zeros(5, 1)), "same dimension"),
    (lambda: plots.samples_vs_truth(torch.full((5, 2), math.nan), None), "NaN"),
    (lambda: plots.sample_paths(torch.zeros(4, 2, 2), torch.zeros(3)), "one entry per state"),
    (lambda: plots.marginal_densities(toys.ring(), [-1.0]), "times"),
    (lambda: plots.convergence({"m": ([1, 2], [0.0, 1.0])}), "positive"),
    (lambda: plots.convergence({"m": ([1, 2, 3], [1.0, 0.5])}), "x values"),
    (lambda: plots.error_vs_nfe({}), "non-empty"),
    (lambda: plots.save_figure(Figure(), "figure.jpg"), ".png"),
])
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- readable at a glance (issue 11, item 25) ------------------------------------------------------

def test_a_non_finite_order_is_left_out_of_the_legend():
    ns = np.array([10.0, 20.0, 40.0])
    (ax,) = plots.convergence({"pc": (ns, [0.2, 0.17, 0.26]), "one": ([10.0], [0.1]), "em": (ns, 1 / ns)},
                              orders={"pc": math.nan}).axes
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["pc", "one", "em (p = 1.00)"]
    assert not any("nan" in label for label in labels)


def density_images(figure):
    return [ax.images[0] for ax in visible_axes(figure)]


def test_density_panels_share_one_colour_scale_shown_by_a_colour_bar():
    ring, times = toys.ring(), [0.0, 1.0, 3.0]
    figure = plots.marginal_densities(ring, times, limits=(-6.0, 6.0), resolution=41)
    images = density_images(figure)
    top = max(float(image.get_array().max()) for image in images)
    assert all(image.get_clim() == (0.0, top) for image in images)  # one scale, from 0 to the largest density
    bars = [image.colorbar for image in images if image.colorbar is not None]
    assert len(bars) == 1 and bars[0].vmin == 0.0 and bars[0].vmax == top and "p_t" in bars[0].ax.get_ylabel()
    axes = visible_axes(figure)
    assert [ax.get_xlabel() for ax in axes] == ["$x_1$"] * 3 and axes[0].get_ylabel() == "$x_2$"
    assert len(axes[0].get_xticks()) > 1  # the panels have axes with ticks


def test_density_panels_on_their_own_scales_say_so():
    figure = plots.marginal_densities(toys.ring(), [0.0, 3.0], resolution=41, shared_scale=False)
    for ax, image in zip(visible_axes(figure), density_images(figure)):
        assert image.get_clim() == (0.0, float(image.get_array().max()))
        assert image.colorbar is not None and ax.get_title().endswith("(own scale)")


def test_the_truth_is_drawn_over_the_samples_and_named(points):
    figure = plots.samples_vs_truth({"a": points}, points + 0.1)
    (ax,) = visible_axes(figure)
    truth, samples = ax.collections
    assert truth.get_zorder() > samples.get_zorder()  # drawn last: never hidden under the samples
    assert len(truth.get_facecolors()) == 0 or truth.get_facecolors()[0][3] == 0  # rings: the samples show through
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["exact samples", "samples"]


def error_bar_extents(container) -> np.ndarray:
    """(low, high) of each vertical error bar of an ErrorbarContainer."""
    (bars,) = container.lines[2]
    return np.array([[segment[0][1], segment[1][1]] for segment in bars.get_segments()])


def test_convergence_draws_error_bars_and_a_floor_band():
    ns = np.array([10.0, 20.0, 40.0])
    errors = np.array([0.3, 0.15, 0.02])
    se = np.array([0.03, 0.01, 0.05])  # the last bar would reach below 0
    (ax,) = plots.convergence({"m": (ns, errors), "n": (ns, 2 * errors)}, se={"m": se}, floor=0.01,
                              floor_se=0.002).axes
    (container,) = ax.containers  # only the series given standard errors gets bars
    np.testing.assert_allclose(container.lines[0].get_ydata(), errors)
    # Bars are y ± se, except that a log axis cannot show 0: a bar reaching it stops at y / 10.
    expected = np.stack([np.maximum(errors - se, errors / 10), errors + se], axis=1)
    np.testing.assert_allclose(error_bar_extents(container), expected, rtol=1e-12)
    (band,) = ax.patches
    assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx((0.008, 0.012))
    assert "noise floor ± SE" in [text.get_text() for text in ax.get_legend().get_texts()]


def test_error_vs_nfe_keeps_standard_errors_with_their_points():
    figure = plots.error_vs_nfe({"m": ([40, 10, 20], [0.1, 0.4, 0.2])}, se={"m": [0.01, 0.04, 0.02]},
                                compare={"m": ([10, 20], [0.3, 0.1])}, compare_se={"m": [0.05, 0.01]})
    (ax,) = figure.axes
    main, other = ax.containers
    np.testing.assert_allclose(error_bar_extents(main), [[0.36, 0.44], [0.18, 0.22], [0.09, 0.11]], rtol=1e-12)
    np.testing.assert_allclose(error_bar_extents(other), [[0.25, 0.35], [0.09, 0.11]], rtol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    ({"se": {"m": [0.1]}}, "1 standard errors for 2 points"),
    ({"se": {"x": [0.1, 0.1]}}, "label 'x'"),
    ({"se": {"m": [0.1, -0.1]}}, ">= 0"),
    ({"se": {"m": [0.1, math.nan]}}, "finite"),
    ({"floor_se": 0.1}, "floor_se needs a floor"),
    ({"floor": 0.1, "floor_se": -1.0}, "floor_se"),
])
def test_bad_standard_errors_are_refused(kwargs, match):
    for plot in (plots.convergence, plots.error_vs_nfe):
        with pytest.raises(ValueError, match=match):
            plot({"m": ([10, 20], [0.2, 0.1])}, **kwargs)


@pytest.mark.parametrize("make, x_labels", [
    (lambda: plots.convergence({"a": ([25, 50, 100, 200, 400], [0.05, 0.025, 0.012, 0.006, 0.003]),
                                "b": ([25, 50, 100, 200, 400], [5e-3, 1.2e-3, 3e-4, 7e-5, 1.8e-5])}),
     ["25", "50", "100", "200", "400"]),  # a sweep's step counts, written plainly
    (lambda: plots.error_vs_nfe({"a": ([24, 49, 99], [0.16, 0.114, 0.137]),
                                 "b": ([48, 98, 198], [0.113, 0.114, 0.114])}, floor=0.145), None),
    (lambda: plots.convergence({"a": ([10, 12, 14, 16], [0.5, 0.45, 0.42, 0.4])}), None),
], ids=["step-counts", "nfe-narrow-errors", "narrow-both"])
def test_log_axis_tick_labels_never_overlap(make, x_labels):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = make()
    FigureCanvasAgg(figure).draw()
    renderer = figure.canvas.get_renderer()
    (ax,) = figure.axes
    for axis, (start, end) in ((ax.xaxis, (0, 2)), (ax.yaxis, (1, 3))):
        low, high = sorted(axis.get_view_interval())
        ticks = sorted(axis.get_major_ticks() + axis.get_minor_ticks(), key=lambda tick: tick.get_loc())
        labels = [tick.label1 for tick in ticks  # every label drawn, major or minor
                  if low <= tick.get_loc() <= high and tick.label1.get_visible() and tick.label1.get_text()]
        assert len(labels) >= 2  # the axis can be read: at least two labelled values
        boxes = sorted((label.get_window_extent(renderer).extents for label in labels), key=lambda box: box[start])
        for before, after in zip(boxes, boxes[1:]):
            assert before[end] < after[start]  # each label ends before the next begins
        if axis is ax.xaxis and x_labels is not None:
            assert [label.get_text() for label in labels] == x_labels
