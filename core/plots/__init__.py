"""Pictures of a run under ``RUN/plots/``: reconstructions, clusters, a 2-D map of the features,
the confusion matrix and the training curve. Matplotlib (headless Agg) is imported only when
a plot is drawn.
"""

from __future__ import annotations

from .inputs import PlotInputs
from .options import PlotOptions, options_from_env
from .stage import PlotOutcome, make_plots, plot_run

__all__ = ["PlotInputs", "PlotOptions", "PlotOutcome", "make_plots", "options_from_env", "plot_run"]
