"""AFFNet (5.5M parameters, 256x256) trained from scratch on ImageNet-1k, read from TFDS (array_record).

Prepare the data once (needs TensorFlow and the manually downloaded ImageNet archives in the TFDS manual dir):

    tfds build imagenet2012 --file_format=array_record --data_dir=$MIXER_ZOO_DATA/tfds
    python -m train --config=train/configs/affnet_imagenet.py --workdir=runs/affnet_imagenet \
        --config.data.data_dir=$MIXER_ZOO_DATA/tfds
    python -m train --config=train/configs/affnet_imagenet.py:variant=affnet_et --workdir=runs/affnet_et
    python -m train --config=train/configs/affnet_imagenet.py:quicktest --workdir=/tmp/q   # 20 steps

Recipe. The AFFNet YAML files are not public (they sit on the README's download share). AFFNet is built on the
CVNets MobileViT code base and its three sizes mirror MobileViT's modes, so everything below is the CVNets MobileViT
v1 ImageNet recipe (`apple/ml-cvnets: config/classification/imagenet/mobilevit.yaml`), marked [MobileViT] where the
AFFNet README does not state it:
- 300 epochs, global batch 1024 (128 per GPU on 8 GPUs) [MobileViT; the README trains on 8 A100s];
- AdamW (0.9, 0.999), weight decay 0.01 on every parameter (`no_decay_bn_filter_bias: false`) [MobileViT];
- cosine schedule from 2e-3 to 2e-4, 20k warmup iterations starting at 2e-4 [MobileViT];
- label smoothing 0.1, classifier dropout 0.1, EMA of the weights with momentum 0.0005 (decay 0.9995) [MobileViT];
- random resized crop (bilinear) and horizontal flip; evaluation resizes the short side to 288 and centre-crops 256
  (crop_pct 256/288); pixels in [0, 1] with no mean/std normalisation (CVNets' to_tensor) [MobileViT and CVNets];
- not reproduced: CVNets' multi-scale variable batch sampler (crops 160 to 320 with batch sizes scaled to match),
  which needs per-step input shapes; we train at the fixed 256.
Our model: activation swish, per-pixel LayerNorm in the AFF blocks (see zoo/affnet.py for why).

Hardware: the official runs used 8 A100 GPUs; 300 epochs of 1251 steps (batch 1024), about 375k steps.
Wall time: not measured by this project (no ImageNet copy on its offline machines). Expected metric: the README
reports 79.8% top-1 for AFFNet, 77.0% for AFFNet-T and 73.0% for AFFNet-ET with the authors' recipe; this config has
not been run to completion here, so no figure is claimed for it.
"""

from train.configs.common import base_config, model_fields, parse_arg, quicktest

VARIANTS = ("affnet", "affnet_t", "affnet_et")


def get_config(arg=None):
    args = parse_arg(arg, variant="affnet", quicktest=False)
    if args.variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {args.variant!r}")
    c = base_config()
    c.model_name = args.variant
    c.model = model_fields(c.model_name, classifier_dropout=0.1)
    c.task.name = "classification"
    c.task.label_smoothing = 0.1
    c.data.dataset = "tfds:imagenet2012"
    c.data.train_split = "train[:99%]"
    c.data.val_split = "train[99%:]"  # a held-out minival; the official validation set is the test split
    c.data.test_split = "validation"
    c.data.augment = "rrc"
    c.data.flip = True
    c.batch_size = 1024
    c.eval_batch_size = 500
    c.total_epochs = 300
    c.optim.name = "adamw"
    c.optim.lr = 2e-3
    c.optim.weight_decay = 0.01
    c.optim.wd_mask = "all"
    c.optim.schedule.name = "cosine"
    c.optim.schedule.warmup_steps = 20_000
    c.optim.schedule.warmup_init_factor = 0.1  # 2e-4
    c.optim.schedule.end_lr_factor = 0.1  # 2e-4
    c.ema_decay = 0.9995
    c.eval_every_epochs = 5
    c.checkpoint.every_steps = 5000
    c.log_every_steps = 500
    if args.quicktest:
        quicktest(c, batch_size=8, eval_batch_size=16)
    return c
