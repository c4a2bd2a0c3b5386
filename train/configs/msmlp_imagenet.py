"""MS-MLP (Tiny by default; `variant=msmlp_small|msmlp_base`) trained from scratch on ImageNet-1k, read from TFDS
(array_record).

Prepare the data once (needs TensorFlow and the manually downloaded ImageNet archives in the TFDS manual dir):

    tfds build imagenet2012 --file_format=array_record --data_dir=$MIXER_ZOO_DATA/tfds
    python -m train --config=train/configs/msmlp_imagenet.py --workdir=runs/msmlp_tiny \
        --config.data.data_dir=$MIXER_ZOO_DATA/tfds
    python -m train --config=train/configs/msmlp_imagenet.py:variant=msmlp_base --workdir=runs/msmlp_base
    python -m train --config=train/configs/msmlp_imagenet.py:quicktest --workdir=/tmp/q   # 20 steps

Recipe (the official `config.py` defaults and `configs/msmlp_*_patch4_shift5_224.yaml`, Swin's training code;
vision_mixers.md §3.3):
- 300 epochs, global batch 1024 (README: 8 GPUs x 128), AdamW (0.9, 0.999, eps 1e-8), base lr 5e-4 per 512 images
  -> 1e-3 at batch 1024; 20 warmup epochs from 5e-7 * batch / 512, cosine to 5e-6 * batch / 512;
- weight decay 0.05, not on biases and 1-D parameters (norms, layer scale `gamma`); gradient clipping at 5.0;
- label smoothing 0.1, stochastic depth 0.1 / 0.4 / 0.5 (Tiny / Small / Base, the registered defaults);
- RandAugment rand-m9-mstd0.5-inc1, colour jitter 0.4, random erasing 0.25, mixup 0.8 / cutmix 1.0, random resized
  crop (bicubic) and flip; evaluation resizes to 256 and centre-crops 224; ImageNet mean/std. EMA off.
Our pipeline has RandAugment (2 ops, magnitude 9: timm's rand-m9-mstd0.5-inc1 without its magnitude noise and
increasing mode) and mixup 0.8 / cutmix 1.0 (switch probability 0.5), both set here; it has no colour jitter or
random erasing, so expect a slightly lower accuracy than the paper's from this config as is.

Hardware: the official runs used 8 GPUs (V100/A100 class); 300 epochs of 1251 steps (batch 1024), about 375k steps.
Wall time: not measured by this project (no ImageNet copy on its offline machines). Expected metric: the README
reports 82.1% (Tiny), 83.4% (Small), 83.8% (Base) top-1 with the full recipe; this config has not been run to
completion here, so no figure is claimed for it.
"""

from train.configs.common import base_config, model_fields, parse_arg, quicktest

VARIANTS = ("msmlp_tiny", "msmlp_small", "msmlp_base")


def get_config(arg=None):
    args = parse_arg(arg, variant="msmlp_tiny", quicktest=False)
    if args.variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {args.variant!r}")
    c = base_config()
    c.model_name = args.variant
    c.model = model_fields(c.model_name)
    c.task.name = "classification"
    c.task.label_smoothing = 0.1
    c.task.mixup_alpha = 0.8
    c.task.cutmix_alpha = 1.0
    c.data.dataset = "tfds:imagenet2012"
    c.data.train_split = "train[:99%]"
    c.data.val_split = "train[99%:]"  # a held-out minival; the official validation set is the test split
    c.data.test_split = "validation"
    c.data.augment = "rrc"
    c.data.flip = True
    c.data.randaugment_ops = 2
    c.data.randaugment_magnitude = 9.0
    c.batch_size = 1024
    c.eval_batch_size = 500
    c.total_epochs = 300
    c.optim.name = "adamw"
    c.optim.lr = 1e-3  # 5e-4 * 1024 / 512
    c.optim.weight_decay = 0.05
    c.optim.grad_clip_norm = 5.0
    c.optim.schedule.name = "cosine"
    c.optim.schedule.warmup_epochs = 20
    c.optim.schedule.warmup_init_factor = 5e-4  # 5e-7 / 1e-3 of the base lr
    c.optim.schedule.end_lr_factor = 1e-2  # 5e-6 / 5e-4
    c.eval_every_epochs = 5
    c.checkpoint.every_steps = 5000
    c.log_every_steps = 500
    if args.quicktest:
        quicktest(c, batch_size=8, eval_batch_size=16)
    return c
