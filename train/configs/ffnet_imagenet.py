"""FFNet (13.8M / 27.2M / 48.8M parameters as trained, 256x256) trained from scratch on ImageNet-1k, read from TFDS
(array_record).

Prepare the data once (needs TensorFlow and the manually downloaded ImageNet archives in the TFDS manual dir):

    tfds build imagenet2012 --file_format=array_record --data_dir=$MIXER_ZOO_DATA/tfds
    python -m train --config=train/configs/ffnet_imagenet.py --workdir=runs/ffnet_1 \
        --config.data.data_dir=$MIXER_ZOO_DATA/tfds
    python -m train --config=train/configs/ffnet_imagenet.py:variant=ffnet_3 --workdir=runs/ffnet_3
    python -m train --config=train/configs/ffnet_imagenet.py:quicktest --workdir=/tmp/q   # 20 steps

Recipe: the official `train.py` (ysj9909/FFNet at f3c3e4c, a FastViT-style copy of timm's training script) with the
README's settings:
- 300 epochs, global batch 1024 (128 per GPU on 8 GPUs);
- AdamW (0.9, 0.999), lr 1e-3, weight decay 0.05 on weights only (timm's `filter_bias_and_bn`; note: timm also
  decays the (C, 1, 1) layer-scale tensors, which our default mask leaves undecayed as 1-D `layer_scale` leaves);
- cosine schedule to min lr 1e-5 with 5 warmup epochs from 1e-6 (`--warmup-lr 1e-6 --min-lr 1e-5`);
- label smoothing 0.1; RandAugment `rand-m9-mstd0.5-inc1` (2 ops, magnitude 9: our approximation of timm's policy);
  mixup 0.2 for FFNet-1/2 and 0.8 (the script default) for FFNet-3, cutmix 1.0, switch probability 0.5;
- random resized crop (0.08-1, bicubic) and horizontal flip; stochastic depth 0.1 / 0.15 / 0.35 (the registered
  defaults of ffnet_1 / ffnet_2 / ffnet_3);
- model EMA on, decay 0.9995 (the script's default, `--model-ema` is on unless disabled);
- evaluation: bicubic resize to 256 / crop_pct (0.9 for FFNet-1/2, 0.95 for FFNet-3) and centre crop 256, ImageNet
  mean/std (the models' registered data configs).
Not reproduced: random erasing 0.25 (the trainer has no random erasing); timm's scheduler cooldown epochs
(`--cooldown-epochs 20` at the min lr, which some timm versions append to the 300 epochs); colour jitter 0.4 is
inactive in timm when RandAugment is on, so it is not a difference. The hard-distillation runs (RegNetY-160 teacher)
and the 384 fine-tuning (30 epochs, lr 5e-6, wd 1e-8, constant lr, batch 512) are not configured here.

Hardware: the official runs used 8 GPUs; 300 epochs of 1251 steps (batch 1024), about 375k steps. Wall time: not
measured by this project (no ImageNet copy on its offline machines). Expected metric: the README reports 81.3% /
82.9% / 83.9% top-1 for FFNet-1 / 2 / 3 with the authors' recipe; this config has not been run to completion here,
so no figure is claimed for it.
"""

from train.configs.common import base_config, model_fields, parse_arg, quicktest

VARIANTS = {"ffnet_1": 0.2, "ffnet_2": 0.2, "ffnet_3": 0.8}  # variant -> mixup alpha


def get_config(arg=None):
    args = parse_arg(arg, variant="ffnet_1", quicktest=False)
    if args.variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {args.variant!r}")
    c = base_config()
    c.model_name = args.variant
    c.model = model_fields(c.model_name)
    c.task.name = "classification"
    c.task.label_smoothing = 0.1
    c.task.mixup_alpha = VARIANTS[args.variant]
    c.task.cutmix_alpha = 1.0
    c.task.switch_prob = 0.5
    c.data.dataset = "tfds:imagenet2012"
    c.data.train_split = "train"
    c.data.val_split = ""
    c.data.test_split = "validation"
    c.data.augment = "rrc"
    c.data.rrc_scale = (0.08, 1.0)
    c.data.flip = True
    c.data.randaugment_ops = 2
    c.data.randaugment_magnitude = 9.0
    c.batch_size = 1024
    c.eval_batch_size = 500
    c.total_epochs = 300
    c.optim.name = "adamw"
    c.optim.lr = 1e-3
    c.optim.weight_decay = 0.05
    c.optim.schedule.name = "cosine"
    c.optim.schedule.warmup_epochs = 5
    c.optim.schedule.warmup_init_factor = 1e-3  # 1e-6
    c.optim.schedule.end_lr_factor = 1e-2  # 1e-5
    c.ema_decay = 0.9995
    c.eval_every_epochs = 5
    c.checkpoint.every_steps = 5000
    c.log_every_steps = 500
    if args.quicktest:
        quicktest(c, batch_size=8, eval_batch_size=16)
    return c
