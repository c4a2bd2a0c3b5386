"""AFNONet (afnonet_d256_224, the official README command: width 256, 4 filter blocks, 12 layers, patch 4) on
ImageNet-1k from scratch with the official DeiT-style recipe, read from TFDS (array_record, no TensorFlow).

Prepare the data once (ImageNet needs a manual download into the TFDS manual dir; building needs TensorFlow:
pip install -e ".[tfds-build]"), then train:

    tfds build imagenet2012 --file_format=array_record --data_dir=$MIXER_ZOO_DATA/tfds
    python -m train --config=train/configs/afno_imagenet.py --workdir=runs/afno_imagenet \
        --config.data.data_dir=$MIXER_ZOO_DATA/tfds
    python -m train --config=train/configs/afno_imagenet.py --workdir=runs/afno384 --config.model_name=afnonet_d384_224
    python -m train --config=train/configs/afno_imagenet.py:quicktest --workdir=/tmp/q   # 20 steps, shrunk model

Recipe (NVlabs/AFNO-transformer `classification/main_afnonet.py`, DeiT's defaults, vision_mixers.md §4.3): AdamW
at lr 5e-4 x batch / 512 (= 1e-3 at batch 1024, the README's 128 x 8 GPUs), weight decay 0.05, betas (0.9, 0.999),
5 warmup epochs from 1e-6, cosine to 1e-5, 300 epochs; random resized crop (0.08-1, bicubic) and flips,
RandAugment m9 (2 ops, timm's rand-m9-mstd0.5-inc1 approximated), mixup 0.8 / cutmix 1.0 (switch probability 0.5),
label smoothing 0.1, gradient clipping at norm 1, no random erasing; evaluation at crop 0.9 (bicubic) with the
ImageNet mean/std, on the 50k validation images. Stochastic depth stays 0: the official script never passes
`--drop-path` to the model. Mixed precision (the official AMP) as bfloat16 compute; the filter itself runs in
float32, as the official code.
Differences from the official run, all small: the schedule is per step (timm's is per epoch); DeiT exempts
`pos_embed` from weight decay, our default mask decays every kernel-like leaf (pos_embed and the filter weights;
the filter weights are decayed officially too); the official EMA of the weights (--model-ema, decay 0.99996) is
off here (set --config.ema_decay=0.99996 to turn it on).

Hardware: 8 GPUs (or a TPU slice); about 1.25k steps per epoch, 375k steps. Expected metric: none published by
the authors for ImageNet (the paper reports segmentation), so no figure is claimed here and none has been measured.
Wall time: not measured by this project (the official README's 8-GPU setup).
"""

from train.configs.common import base_config, model_fields, parse_arg


def get_config(arg=None):
    args = parse_arg(arg, quicktest=False)
    c = base_config()
    c.model_name = "afnonet_d256_224"
    c.model = model_fields(c.model_name, drop_path_rate=0.0)
    c.compute_dtype = "bfloat16"
    c.task.name = "classification"
    c.task.label_smoothing = 0.1
    c.task.mixup_alpha = 0.8
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
    c.eval_batch_size = 1000
    c.total_epochs = 300
    c.optim.name = "adamw"
    c.optim.lr = 5e-4 * c.batch_size / 512
    c.optim.weight_decay = 0.05
    c.optim.grad_clip_norm = 1.0
    c.optim.schedule.name = "cosine"
    c.optim.schedule.warmup_epochs = 5
    c.optim.schedule.warmup_init_factor = 1e-6 / c.optim.lr
    c.optim.schedule.end_lr_factor = 1e-5 / c.optim.lr
    c.checkpoint.every_steps = 5000
    c.log_every_steps = 100
    if args.quicktest:
        # The pipeline end to end on a shrunk model (32x32 inputs, 2 layers of width 64): minutes become seconds.
        c.quicktest = True
        c.model.img_size = 32
        c.model.depth = 2
        c.model.embed_dim = 64
        c.compute_dtype = "float32"
        c.total_epochs = 0.0
        c.total_steps = 20
        c.batch_size = 16
        c.eval_batch_size = 32
        c.eval_every_epochs = 0
        c.eval_every_steps = 10
        c.log_every_steps = 10
        c.checkpoint.every_steps = 10
        c.optim.schedule.warmup_epochs = 0
        c.optim.schedule.warmup_steps = 2
    return c
