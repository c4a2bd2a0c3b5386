"""The embedded default: a tiny MLP-Mixer on scikit-learn's digits (real data, no download), on CPU.

    python -m train                                     # this config, workdir runs/default
    python -m train --config=train/configs/default.py:quicktest --workdir=/tmp/q

Hardware: 2 CPU cores. Wall time: about 1 minute. Expected: >= 95% test accuracy on the fixed 360-image test
split (see docs/results.md for the measured figure and the command that reproduces it).
"""

from train.configs.common import base_config, model_fields, parse_arg


def get_config(arg=None):
    args = parse_arg(arg, quicktest=False)
    c = base_config()
    c.model_name = "mixer_ti2_8"  # 8x8x1 inputs, patch 2: 16 tokens
    c.model = model_fields(c.model_name)
    c.task.name = "classification"
    c.task.label_smoothing = 0.1
    c.data.dataset = "digits"
    c.data.train_split = "train_full"  # 1437 images; test = the fixed 360
    c.data.test_split = "test"
    c.data.augment = "pad_crop"
    c.data.crop_padding = 1
    c.data.flip = False  # digits are not mirror-symmetric
    c.batch_size = 64
    c.total_epochs = 30
    c.optim.name = "adamw"
    c.optim.lr = 2e-3
    c.optim.weight_decay = 0.05
    c.optim.grad_clip_norm = 1.0
    c.optim.schedule.name = "cosine"
    c.optim.schedule.warmup_epochs = 3
    c.log_every_steps = 100
    if args.quicktest:
        c.quicktest = True
        c.total_epochs = 0.0
        c.total_steps = 20
        c.log_every_steps = 10
        c.optim.schedule.warmup_epochs = 0
        c.optim.schedule.warmup_steps = 2
    return c
