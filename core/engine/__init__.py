"""Running a clustering: configuration, stage building, the runner's named steps, the pipeline
object, persistence of a fitted pipeline, resuming, and the chunked and Dask engines."""
