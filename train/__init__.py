"""The one trainer of mixer-zoo: `train.train_and_evaluate(config, workdir)`, or `python -m train`."""


def __getattr__(name):
    # Imported lazily so that `python -m train` can configure JAX before it loads.
    if name == "train_and_evaluate":
        from train.trainer import train_and_evaluate

        return train_and_evaluate
    raise AttributeError(f"module 'train' has no attribute {name!r}")


__all__ = ["train_and_evaluate"]
