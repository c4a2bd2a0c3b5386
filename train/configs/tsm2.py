"""TSM2 (Time Series MambaMixer, arXiv 2403.19888 v1) on the long-horizon forecasting benchmarks, lookback 512.

    python -m train --config=train/configs/tsm2.py:ETTh1,pred_len=96 --workdir=runs/tsm2_etth1_96
    python -m train --config=train/configs/tsm2.py:quicktest --workdir=/tmp/q       # 20 steps of ETTh1
    python -m train.reproduce tsm2 --datasets ETTh1,ETTh2 --horizons 96,192,336,720 --seeds 3 --out runs/repro

Protocol: the paper's (lookback 512, horizons 96/192/336/720, features M, the standard splits and train-only
z-scoring, MSE on the normalised scale; only MSE is reported). Hyper-parameters: the paper says "tuned by grid
search" and publishes none, and no official code exists. We use the per-data-set settings of the only public
replication (n8thantran/mambamixer-replication `train_all.py`, which reports MSE within ~3% of the paper on average,
10-20% worse on ETTh1/ETTh2): patches 16 / stride 8, d_state 16, d_conv 4, expand 2, 2 layers, d_model 16 (32 for
Weather), dropout 0.5 / 0.3, AdamW with the data set's lr and weight decay, a per-epoch cosine over the nominal
epochs (their CosineAnnealingLR, floor 1e-6 ~ 0), gradient clipping at norm 1, early stopping on the validation MSE
with their patience, the best checkpoint tested. Not from them: seed 2024 and the evaluation batch size.
Our TSM2 follows the paper where the replication differs (identity-initialised, unnormalised weighted averaging
instead of their softmax weights; one shared in_proj for the two variate scans; the 2-D normalisation as one
LayerNorm over each series' patches and features, TSMixer's, `head_norm="joint"`, where theirs normalises over the
features and then over the patches, 10% worse on ETTh1-96 here); see zoo/mambamixer.py and docs/results.md.

Hardware: one CPU core per run (Intel Xeon; two data sets side by side with `taskset -c 0` / `-c 1`).
Wall time: about 2 minutes per ETTh1 / ETTh2 epoch (126 steps of batch 64, then validation); early stopping ended
ETTh1-96 after 10 epochs (1397 s) and the other horizons after 6 (663-1373 s, longer where two runs shared a core).
The quicktest takes about a minute plus compilation.
Expected: `PAPER_MSE` below (the v1 paper's Table); measured: ETTh1 average MSE 0.4584 (+13.6%), ETTh2 0.3710
(+11.2%), rows +1.8% to +22.5%; the replication reports 0.4538 and 0.3756 for itself. See docs/results.md.
"""

from train.configs.common import base_config, model_fields, parse_arg

# dataset: (d_model, lr, weight_decay, batch_size, train_epochs, patience, dropout), from the replication's CONFIGS.
HPARAMS = {
    "ETTh1": (16, 5e-4, 0.05, 64, 20, 5, 0.5),
    "ETTh2": (16, 5e-4, 0.05, 64, 20, 5, 0.5),
    "ETTm1": (16, 1e-3, 0.05, 128, 15, 5, 0.3),
    "ETTm2": (16, 1e-3, 0.05, 128, 15, 5, 0.3),
    "Weather": (32, 1e-3, 0.01, 64, 15, 5, 0.3),
    "Exchange": (16, 5e-4, 0.05, 32, 30, 8, 0.5),
}
SEQ_LEN = 512  # the paper's lookback (SAMFormer's protocol), every data set

# Paper (v1) Table: TSM2 test MSE per horizon 96 / 192 / 336 / 720.
PAPER_MSE = {
    "ETTh1": (0.375, 0.398, 0.419, 0.422),
    "ETTh2": (0.253, 0.334, 0.347, 0.401),
    "ETTm1": (0.322, 0.349, 0.366, 0.407),
    "ETTm2": (0.173, 0.230, 0.279, 0.388),
    "Weather": (0.161, 0.208, 0.252, 0.337),
    "Exchange": (0.163, 0.229, 0.383, 0.999),
}
# For train.reproduce: (average MSE, average MAE); the paper reports no MAE (NaN).
PAPER = {name: (sum(mse) / len(mse), float("nan")) for name, mse in PAPER_MSE.items()}


def get_config(arg=None):
    args = parse_arg(arg, _positional="dataset", dataset="ETTh1", pred_len=96, quicktest=False)
    dataset = {k.lower(): k for k in HPARAMS}.get(args.dataset.lower())
    if dataset is None:
        raise ValueError(f"tsm2 config: unknown data set {args.dataset!r}; known: {', '.join(HPARAMS)}")
    d_model, lr, weight_decay, batch_size, epochs, patience, dropout = HPARAMS[dataset]

    c = base_config()
    c.seed = 2024
    c.model_name = "tsm2"
    c.model = model_fields(
        "tsm2",
        seq_len=SEQ_LEN,
        pred_len=args.pred_len,
        patch_len=16,
        stride=8,
        d_model=d_model,
        e_layers=2,
        d_state=16,
        d_conv=4,
        expand=2.0,
        dropout=dropout,
        use_norm=True,
        head_norm="joint",
    )
    c.task.name = "forecasting"
    c.data.dataset = dataset
    c.data.features = "M"
    c.data.freq = "h"
    c.data.val_split = "val"
    c.data.test_split = "test"
    c.batch_size = batch_size
    c.eval_batch_size = 256
    c.total_epochs = epochs
    c.optim.name = "adamw"
    c.optim.lr = lr
    c.optim.weight_decay = weight_decay
    c.optim.grad_clip_norm = 1.0
    c.optim.schedule.name = "epoch_cosine"
    c.optim.schedule.epochs = epochs
    c.eval_every_epochs = 1
    c.early_stopping.metric = "val/mse"
    c.early_stopping.patience = patience
    c.checkpoint.max_to_keep = 2
    c.log_every_steps = 100
    if args.quicktest:
        c.quicktest = True
        c.total_epochs = 0.0
        c.total_steps = 20
        c.eval_every_epochs = 0
        c.eval_every_steps = 10
        c.log_every_steps = 10
    return c
