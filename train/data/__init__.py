"""Input pipelines: image data sets and the long-horizon forecasting benchmarks."""

__all__ = ["forecasting_dataset"]


def __getattr__(name):
    # The forecasting pipeline needs pandas (~60 MiB resident): loaded on first use, not by image runs.
    if name == "forecasting_dataset":
        from train.data.timeseries import forecasting_dataset

        return forecasting_dataset
    raise AttributeError(f"module 'train.data' has no attribute {name!r}")
