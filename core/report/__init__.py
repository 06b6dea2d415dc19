"""Pictures and the page of a run: the plots under ``RUN/plots/``, ``report.html`` with its
explorer, and the notebook view. Reads results; never runs or fits anything."""
