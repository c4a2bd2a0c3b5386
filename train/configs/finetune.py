"""Fine-tuning: Mixer-B/16 pre-trained on ImageNet-21k (the official release) to CIFAR-10 at 224 px.

    tfds build cifar10 --file_format=array_record --data_dir=$MIXER_ZOO_DATA/tfds
    python -m train --config=train/configs/finetune.py --workdir=runs/mixer_b16_cifar10 \
        --config.data.data_dir=$MIXER_ZOO_DATA/tfds
    # Any release (its model follows): train/configs/finetune.py:init_from=msmlp_tiny.in1k
    # A file or run: --config.init_from=... (with --config.model_name=... for a file)
    python -m train --config=train/configs/finetune.py:quicktest,init_from=runs/default --workdir=/tmp/ft

The weights (`mixer_b16_224.goog_in21k`, the official `imagenet21k/Mixer-B_16.npz`, 21,843 classes) are
downloaded and sha256-recorded on first use; the head is re-initialised for 10 classes (`init_dont_load`
defaults to `head/.*` when the class counts differ), and the release's preprocessing (mean = std = 0.5,
bicubic, crop 0.875) is the pipeline's.

Recipe: the ViT/Mixer transfer protocol (ViT paper, Dosovitskiy et al. 2021, Appendix B.1.1 and Table 10; the
Mixer paper, Tolstikhin et al. 2021, section 3.1, fine-tunes the same way): SGD with momentum 0.9, batch 512,
gradient clipping at global norm 1, no weight decay, cosine decay after a linear warmup (500 steps, as
big_vision's transfer configs), 10k steps for CIFAR-10, learning rate picked from {0.003, 0.01, 0.03, 0.06} on a
held-out 2% of the training set (here 0.01; use the validation split to pick another), no augmentation beyond
random crop and flip (inception crop), 224 px (the papers also fine-tune at higher resolutions; Mixer's
token-mixing MLPs are tied to the token count, so that needs weights made for it).
Hardware: an accelerator (Mixer-B/16 at 224 px is ~12.6 GFLOPs per image). Wall time: hours (not measured).
Expected: not measured here (the project's machines have no accelerator and no internet); the Mixer paper
reports ~98% on CIFAR-10 for Mixer-B/16 pre-trained on ImageNet-21k.
`quicktest` fine-tunes `mixer_ti2_8` from `init_from` (default `runs/default`, the default job's run) on digits
for 20 steps: a check of the mechanism, no download.
"""

import zoo
from train.configs.common import base_config, model_fields, parse_arg


def get_config(arg=None):
    args = parse_arg(arg, quicktest=False, init_from="mixer_b16_224.goog_in21k", lr=0.01)
    c = base_config()
    # A registered release picks its model (`init_from=msmlp_tiny.in1k`); a file or run keeps Mixer-B/16 unless
    # --config.model_name says otherwise.
    release = args.init_from in zoo.list_models(pretrained=True)
    c.model_name = args.init_from.partition(".")[0] if release else "mixer_b16_224"
    c.model = model_fields(c.model_name)
    c.init_from = args.init_from
    c.task.name = "classification"
    c.data.dataset = "tfds:cifar10"
    c.data.train_split = "train[:98%]"
    c.data.val_split = "train[98%:]"
    c.data.test_split = "test"
    c.data.augment = "rrc"
    c.batch_size = 512
    c.eval_batch_size = 500
    c.total_steps = 10_000
    c.optim.name = "sgd"
    c.optim.momentum = 0.9
    c.optim.lr = args.lr
    c.optim.weight_decay = 0.0
    c.optim.grad_clip_norm = 1.0
    c.optim.schedule.name = "cosine"
    c.optim.schedule.warmup_steps = 500
    c.eval_every_steps = 1000
    c.checkpoint.every_steps = 1000
    c.log_every_steps = 100
    if args.quicktest:
        c.quicktest = True
        c.model_name = "mixer_ti2_8"
        c.model = model_fields(c.model_name)
        c.init_from = args.init_from if args.init_from != "mixer_b16_224.goog_in21k" else "runs/default"
        c.data.dataset = "digits"
        c.data.train_split = "train"
        c.data.val_split = "validation"
        c.data.augment = "pad_crop"
        c.data.crop_padding = 1
        c.data.flip = False
        c.batch_size = 64
        c.eval_batch_size = 0
        c.total_steps = 20
        c.optim.lr = 0.003
        c.optim.schedule.warmup_steps = 2
        c.eval_every_steps = 10
        c.checkpoint.every_steps = 10
        c.log_every_steps = 10
    return c
