"""Input pipelines: image data sets and the long-horizon forecasting benchmarks."""

from train.data.timeseries import forecasting_dataset

__all__ = ["forecasting_dataset"]
