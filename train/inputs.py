"""From a config to a task and its three splits: the only place that knows data-set kinds (never model names)."""

import dataclasses
from typing import Any

import zoo
from train import config as config_lib
from train import finetune
from train.data import images as image_data
from train.data.pipeline import ArrayExamples, TransformedExamples
from train.tasks import ClassificationTask, ForecastingTask
from train.tasks.forecasting import choose_season_length, seasonal_naive_scale

IMAGE_SPEC_KINDS = ("digits", "tfds:", "folder:", "npz:", "idx:")


@dataclasses.dataclass(frozen=True)
class Inputs:
    task: Any
    model_overrides: dict[str, Any]  # fields the data determines (num_classes, enc_in, ...)
    train: Any  # ExampleSource
    val: Any | None
    test: Any | None
    describe: str
    data_spec: dict | None = None  # saved with the trained model: what new data must look like (forecasting)


def _is_image_spec(dataset: str) -> bool:
    return dataset == "digits" or dataset.startswith(IMAGE_SPEC_KINDS[1:])


def build_inputs(config, entry: zoo.registry.ModelEntry) -> Inputs:
    task_name, dataset = config.task.name, config.data.dataset
    if entry.task != task_name:
        raise ValueError(
            f"model {entry.name!r} is a {entry.task} model but the config's task is {task_name!r} "
            f"(dataset {dataset!r}); pick a {task_name} model (zoo.list_models(task={task_name!r}))"
        )
    if task_name == "classification":
        if not _is_image_spec(dataset):
            raise ValueError(
                f"task classification needs an image data set ('digits', 'tfds:<name>', 'folder:<path>', "
                f"'npz:<path>', 'idx:<dir>'), got {dataset!r}"
            )
        return _classification(config, entry)
    if task_name == "forecasting":
        if _is_image_spec(dataset):
            raise ValueError(
                f"dataset {dataset!r} is an image data set; task forecasting needs a time series (ETTh1, Weather, "
                "... or a CSV path)"
            )
        return _forecasting(config, entry)
    raise ValueError(f"unknown task {task_name!r}; known: classification, forecasting")


def _model_fields(config, entry) -> dict[str, Any]:
    return {**entry.defaults, **config_lib.model_overrides(config)}


def _classification(config, entry) -> Inputs:
    d = config.data
    open_split = lambda split: image_data.make_image_source(d.dataset, split, data_dir=d.data_dir or None)
    train = open_split(d.train_split)
    model = zoo.create_model(entry.name, **{"num_classes": train.num_classes, **config_lib.model_overrides(config)})
    (height, width, channels) = zoo.input_spec(model)["images"]
    if height != width:
        raise ValueError(f"{entry.name}: non-square inputs ({height}x{width}) are not supported by the image pipeline")
    if train.image_shape is not None and train.image_shape[-1] != channels:
        raise ValueError(
            f"dataset {d.dataset!r} has {train.image_shape[-1]}-channel images but {entry.name} expects {channels} "
            f"channels; set --config.model.in_chans={train.image_shape[-1]}"
        )
    norm = finetune.preprocessing(config, entry)
    common = dict(
        image_size=height,
        mean=norm["mean"],
        std=norm["std"],
        crop_pct=norm["crop_pct"],
        interpolation=norm["interpolation"],
        channels=channels,
    )
    randaugment = (d.randaugment_ops, d.randaugment_magnitude) if d.randaugment_ops > 0 else None
    train_tf = image_data.make_transform(
        True,
        augment=d.augment,
        flip=d.flip,
        randaugment=randaugment,
        rrc_scale=tuple(d.rrc_scale),
        pad=d.crop_padding,
        **common,
    )
    eval_tf = image_data.make_transform(False, **common)
    wrap = lambda src, tf: TransformedExamples(src, tf) if src is not None else None
    val = open_split(d.val_split) if d.val_split else None
    test = open_split(d.test_split) if d.test_split else None
    t = config.task
    task = ClassificationTask(
        num_classes=model.num_classes,
        label_smoothing=t.label_smoothing,
        mixup_alpha=t.mixup_alpha,
        cutmix_alpha=t.cutmix_alpha,
        mix_prob=t.mix_prob,
        switch_prob=t.switch_prob,
    )
    sizes = ", ".join(f"{s.name} {len(s)}" for s in (train, val, test) if s is not None)
    return Inputs(
        task=task,
        model_overrides={"num_classes": train.num_classes},
        train=wrap(train, train_tf),
        val=wrap(val, eval_tf),
        test=wrap(test, eval_tf),
        describe=f"{d.dataset}: {sizes} examples, {train.num_classes} classes, {height}x{width}x{channels} inputs",
    )


def forecasting_task(train, season_length: int = 0, report_original: bool = False) -> ForecastingTask:
    """The task that scores forecasts of a data set whose training split is `train` (a ForecastingDataset): its
    target channels, its scaler (sMAPE, original-scale metrics) and MASE's scale, the seasonal naive forecast's
    mean absolute error over the training rows at `season_length` (0 = from the data's sampling frequency)."""
    from train.data import timeseries  # pandas: loaded by forecasting runs only

    frequency = timeseries.sampling_frequency(train.dates)
    season = choose_season_length(season_length, frequency, len(train.data))
    return ForecastingTask(
        target_start=train.target_slice.start or 0,
        target_stop=train.target_slice.stop,
        use_time_features=train.num_time_features > 0,
        scaler_mean=tuple(map(float, train.scaler.mean)),
        scaler_scale=tuple(map(float, train.scaler.scale)),
        mase_scale=tuple(map(float, seasonal_naive_scale(train.data, season, train.columns))),
        season_length=season,
        report_original=report_original,
    )


def _forecasting(config, entry) -> Inputs:
    d, fields = config.data, _model_fields(config, entry)
    for name in ("seq_len", "pred_len"):
        if name not in fields:
            raise ValueError(f"{entry.name} has no field {name!r}; it is not a forecaster")
    # Time features are tokens only for models that take them (`num_time_features`); 0 turns them off.
    use_marks = fields.get("num_time_features", 0) != 0
    timeenc = d.timeenc if use_marks else None
    from train.data import timeseries  # pandas: loaded by forecasting runs only

    open_split = lambda split: timeseries.forecasting_dataset(
        d.dataset,
        split,
        fields["seq_len"],
        fields["pred_len"],
        features=d.features,
        timeenc=timeenc,
        target=d.target,
        freq=d.freq,
        scale=d.scale,
        data_dir=d.data_dir or None,
    )
    train = open_split("train")
    val = open_split("val") if d.val_split else None
    test = open_split("test") if d.test_split else None
    overrides = {"enc_in": train.num_channels}
    if "num_time_features" in fields:
        overrides["num_time_features"] = train.num_time_features
    task = forecasting_task(train, config.task.season_length, report_original=config.task.metrics_original_scale)
    sizes = ", ".join(f"{s.split} {len(s)}" for s in (train, val, test) if s is not None)
    return Inputs(
        task=task,
        model_overrides=overrides,
        train=ArrayExamples(train),
        val=ArrayExamples(val) if val is not None else None,
        test=ArrayExamples(test) if test is not None else None,
        describe=(
            f"{train.name} ({d.features}): {sizes} windows, {train.num_channels} channels, "
            f"{train.num_time_features} time features, seq_len {fields['seq_len']}, pred_len {fields['pred_len']}, "
            f"MASE season length {task.season_length}"
        ),
        data_spec=train.spec(),
    )
