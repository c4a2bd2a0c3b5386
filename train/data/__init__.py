"""Input pipelines: image data sets and the long-horizon forecasting benchmarks."""
