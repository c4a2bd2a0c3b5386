"""A small MLP-Mixer (mixer_ti4_32) trained from scratch on CIFAR-10, read from TFDS (array_record, no TensorFlow).

Prepare the data once (needs TensorFlow: pip install -e ".[tfds-build]"), then train:

    tfds build cifar10 --file_format=array_record --data_dir=$MIXER_ZOO_DATA/tfds
    python -m train --config=train/configs/mixer_cifar10.py --workdir=runs/mixer_cifar10 \
        --config.data.data_dir=$MIXER_ZOO_DATA/tfds
    python -m train --config=train/configs/mixer_cifar10.py:quicktest --workdir=/tmp/q   # 20 steps

Recipe: AdamW (lr 1e-3, weight decay 0.05), 5 warmup epochs then cosine, 100 epochs of batch 128, pad-and-crop
plus flips, RandAugment(2, 9), mixup 0.8 / cutmix 1.0, label smoothing 0.1, stochastic depth 0.1; 45k/5k
train/validation split of the training set, the 10k test set for the final figure.
Hardware: any; about 39k steps. Wall time: not measured by this project (no CIFAR-10 copy on its offline
machines). Expected metric: not measured by this project yet (no CIFAR-10 copy on its
offline machines), so no figure is claimed here; small Mixers trained from scratch like this are commonly
reported in the high 80s.
"""

from train.configs.common import base_config, model_fields, parse_arg, quicktest


def get_config(arg=None):
    args = parse_arg(arg, quicktest=False)
    c = base_config()
    c.model_name = "mixer_ti4_32"
    c.model = model_fields(c.model_name, drop_path_rate=0.1)
    c.task.name = "classification"
    c.task.label_smoothing = 0.1
    c.task.mixup_alpha = 0.8
    c.task.cutmix_alpha = 1.0
    c.data.dataset = "tfds:cifar10"
    c.data.train_split = "train[:90%]"
    c.data.val_split = "train[90%:]"
    c.data.test_split = "test"
    c.data.augment = "pad_crop"
    c.data.randaugment_ops = 2
    c.data.randaugment_magnitude = 9.0
    c.batch_size = 128
    c.eval_batch_size = 500
    c.total_epochs = 100
    c.optim.name = "adamw"
    c.optim.lr = 1e-3
    c.optim.weight_decay = 0.05
    c.optim.grad_clip_norm = 1.0
    c.optim.schedule.name = "cosine"
    c.optim.schedule.warmup_epochs = 5
    c.eval_every_epochs = 5
    c.checkpoint.every_steps = 2000
    c.log_every_steps = 100
    if args.quicktest:
        quicktest(c, batch_size=32, eval_batch_size=64)
    return c
