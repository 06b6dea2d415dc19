"""Pictures of a run under ``RUN/plots/``: reconstructions, clusters, a 2-D map of the features,
the confusion matrix and the training curve. Matplotlib (headless Agg) is imported only when
a plot is drawn.
"""

from __future__ import annotations

from imgclust.report.plots.inputs import PlotInputs
from imgclust.report.plots.options import PlotOptions, options_from_env
from imgclust.report.plots.stage import PlotOutcome, make_plots, plot_run

__all__ = ["PlotInputs", "PlotOptions", "PlotOutcome", "make_plots", "options_from_env", "plot_run"]
