import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gmmmem import plots  # noqa: E402


def test_transition_labels_and_data():
    plots.use_style()
    fig, ax = plt.subplots()
    line = plots.transition(ax, [0.1, 0.5, 1.0], [0.0, 0.2, 1.0], label="run")
    assert ax.get_xlabel() == plots.LABELS["M/N"] and ax.get_ylabel() == plots.LABELS["ratio"]
    assert np.allclose(line.get_ydata(), [0.0, 0.2, 1.0]) and line.get_label() == "run"
    plt.close(fig)


def test_grid_heatmap_annotates_each_cell_and_masks_empty_ones():
    values = np.array([[0.8, np.nan], [0.79, 0.81]])
    ax = plots.grid_heatmap(values, [30, 40], [50, 100], row_name="d", col_name="N")
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["0.790", "0.800", "0.810"]  # the empty cell is left blank
    assert ax.get_xlabel() == "N" and ax.get_ylabel() == "d"
    plt.close(ax.figure)


def test_grid_heatmap_checks_shape():
    with pytest.raises(ValueError):
        plots.grid_heatmap(np.zeros((2, 3)), [1, 2], [1, 2])


def test_grid_heatmap_shares_a_fixed_colour_scale():
    values = np.array([[0.79, 0.80], [0.80, 0.81]])
    ax = plots.grid_heatmap(values, [30, 40], [3, 6], vmin=0.7, vmax=0.9, cbar=False)
    mesh = ax.collections[0]
    assert mesh.get_clim() == (0.7, 0.9) and len(ax.figure.axes) == 1  # no colour-bar axes
    plt.close(ax.figure)
