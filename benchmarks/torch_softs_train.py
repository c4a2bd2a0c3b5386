"""A whole SOFTS training run in plain PyTorch, with the official recipe: the peer of `python -m train --config=softs`.

    python -m benchmarks.torch_softs_train                       # ETTh1, pred_len 96: the official ETTh1-96 script
    python -m benchmarks.torch_softs_train --pred-len 192        # the other horizons (d_ff 512 from 336 on, as ours)
    python -m benchmarks.torch_softs_train --epochs 2 --max-steps 20 --d-model 16 --d-core 8 --d-ff 16   # a smoke run

The model is `TorchSOFTS` (`benchmarks/torch_softs.py`, the official architecture); the loop follows the official
code (Secilia-Cxy/SOFTS `run.py`, `exp/exp_long_term_forecasting.py`, `Dataset_ETT_hour`; the facts are collected
in the project's notes on the forecasting protocol), written here independently of `train/`:

- data: an ETT-hour CSV, features M (all 7 columns in and out), 12/4/4 months of 30 days (rows [0, 8640),
  [8640 - L, 11520), [11520 - L, 14400)), a standard scaler (mean, population std) fitted on the training rows,
  4 timeF features for freq 'h' (hour of day, day of week, day of month, day of year, each in [-0.5, 0.5]),
  windows of stride 1: x = rows [s, s + L), y = rows [s + L, s + L + H);
- loaders: `torch.utils.data.DataLoader` over a map-style dataset, training shuffled, `drop_last=False` for every
  split (as the official `data_factory.py`); evaluation at the training batch size; in-process loading
  (`--num-workers 0`; the official default of 10 workers only costs time on 2 cores);
- Adam (default betas, no weight decay) at lr 3e-4, MSE loss; after epoch e the lr becomes
  lr0 / 2 * (1 + cos(pi * e / train_epochs)) (`lradj=cosine`); seed 2021 for Python, NumPy and torch;
- early stopping on the validation MSE, patience 3 (an epoch counts against it only when its validation MSE is
  strictly above the best), at most 20 epochs; the best state is kept (in memory: the official code saves it to a
  file) and restored for the test;
- test MSE and MAE on the normalised scale over every test window (eval mode: the deterministic STAR pooling).

The official loop also evaluates the test split after every epoch (it only prints it); `--test-every-epoch` does
that too, off by default, since our trainer does not. Imports torch, NumPy and pandas only, so the process's time
and memory are PyTorch's alone (`benchmarks.end_to_end` measures it). Prints one line per epoch, then
`result: {...}` (JSON: test_metrics, epochs, steps, split sizes, per-epoch losses).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from benchmarks.torch_softs import TorchSOFTS

HOURS_PER_MONTH = 30 * 24
# Row borders of Dataset_ETT_hour: 12 months train, 4 validation, 4 test (the rest of the file is unused).
ETT_HOUR_ENDS = {"train": 12 * HOURS_PER_MONTH, "val": 16 * HOURS_PER_MONTH, "test": 20 * HOURS_PER_MONTH}
DATASETS = ("ETTh1", "ETTh2")
RESULT_PREFIX = "result: "


def data_dir() -> Path:
    """`$MIXER_ZOO_DATA`, else `~/.cache/mixer_zoo` (the library's data directory)."""
    return Path(os.environ.get("MIXER_ZOO_DATA") or "~/.cache/mixer_zoo").expanduser()


def find_csv(dataset: str, directory: Path) -> Path:
    for path in (directory / f"{dataset}.csv", directory / "ETT-small" / f"{dataset}.csv"):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{dataset}.csv is not in {directory} (nor in its ETT-small/): set MIXER_ZOO_DATA, or let "
        f"`python -m train --config=softs:{dataset}` download it once"
    )


def hour_time_features(dates: pd.DatetimeIndex) -> np.ndarray:
    """timeF for freq 'h': hour of day, day of week, day of month, day of year, each scaled to [-0.5, 0.5]."""
    columns = (
        dates.hour.to_numpy() / 23.0,
        dates.day_of_week.to_numpy() / 6.0,
        (dates.day.to_numpy() - 1) / 30.0,
        (dates.day_of_year.to_numpy() - 1) / 365.0,
    )
    return np.stack(columns, axis=1) - 0.5


def load_ett_hour(path: str | Path, seq_len: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (values [rows, 7], time features [rows, 4]), float32, scaled with the training rows' statistics.

    Validation and test start `seq_len` rows before their border, so that their first window ends there.
    """
    frame = pd.read_csv(path)
    values = frame.drop(columns=["date"]).to_numpy(np.float64)
    if len(values) < ETT_HOUR_ENDS["test"]:
        raise ValueError(f"{path}: {len(values)} rows, an ETT-hour file has at least {ETT_HOUR_ENDS['test']}")
    train = values[: ETT_HOUR_ENDS["train"]]
    mean, std = train.mean(axis=0), train.std(axis=0)  # StandardScaler: population std
    scaled = ((values - mean) / std).astype(np.float32)
    marks = hour_time_features(pd.DatetimeIndex(pd.to_datetime(frame["date"]))).astype(np.float32)
    starts = {"train": 0, "val": ETT_HOUR_ENDS["train"] - seq_len, "test": ETT_HOUR_ENDS["val"] - seq_len}
    return {s: (scaled[starts[s] : ETT_HOUR_ENDS[s]], marks[starts[s] : ETT_HOUR_ENDS[s]]) for s in starts}


class Windows(torch.utils.data.Dataset):
    """Sliding windows of stride 1 over one split: (x [L, N], y [H, N], x_mark [L, 4])."""

    def __init__(self, values: np.ndarray, marks: np.ndarray, seq_len: int, pred_len: int):
        self.values, self.marks, self.seq_len, self.pred_len = values, marks, seq_len, pred_len

    def __len__(self) -> int:
        return max(0, len(self.values) - self.seq_len - self.pred_len + 1)

    def __getitem__(self, s: int):
        end = s + self.seq_len
        return self.values[s:end], self.values[end : end + self.pred_len], self.marks[s:end]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (the official code seeds NumPy's global generator)
    torch.manual_seed(seed)


def cosine_lr(lr0: float, epoch: int, train_epochs: int) -> float:
    """The lr after epoch `epoch` (1-based) under the official `lradj=cosine`."""
    return lr0 / 2 * (1 + math.cos(math.pi * epoch / train_epochs))


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: torch.utils.data.DataLoader) -> dict[str, float]:
    """MSE and MAE over every window, horizon step and channel (the global means), in eval mode."""
    model.eval()
    squared = absolute = 0.0
    count = 0
    for x, y, x_mark in loader:
        error = model(x, x_mark) - y
        squared += float(error.double().square().sum())
        absolute += float(error.double().abs().sum())
        count += error.numel()
    model.train()
    return {"mse": squared / count, "mae": absolute / count}


def train(args: argparse.Namespace, log=print) -> dict[str, Any]:
    start = time.perf_counter()
    seed_everything(args.seed)
    torch.set_num_threads(args.threads)
    d_ff = args.d_ff or (512 if args.pred_len >= 336 else 256)
    splits = load_ett_hour(find_csv(args.dataset, Path(args.data_dir)), args.seq_len)
    data = {s: Windows(*splits[s], args.seq_len, args.pred_len) for s in splits}
    eval_batch = args.eval_batch_size or args.batch_size
    loaders = {
        s: torch.utils.data.DataLoader(
            data[s],
            batch_size=args.batch_size if s == "train" else eval_batch,
            shuffle=s == "train",
            drop_last=False,
            num_workers=args.num_workers,
        )
        for s in data
    }
    model = TorchSOFTS(args.seq_len, args.pred_len, args.d_model, args.d_core, d_ff, args.e_layers, 0.0, True)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    log(
        f"data: {args.dataset} train {len(data['train'])}, val {len(data['val'])}, test {len(data['test'])} windows; "
        f"model: {sum(p.numel() for p in model.parameters()):,} parameters; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )

    best_mse, best_state, best_epoch, bad_epochs = math.inf, None, 0, 0
    history: list[dict[str, Any]] = []
    steps = 0
    model.train()
    for epoch in range(1, args.epochs + 1):
        epoch_start = time.perf_counter()
        losses = []
        for i, (x, y, x_mark) in enumerate(loaders["train"]):
            if args.max_steps and i >= args.max_steps:
                break
            optimizer.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(x, x_mark), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            steps += 1
        val = evaluate(model, loaders["val"])
        entry = {
            "epoch": epoch,
            "steps": len(losses),
            "train_loss": float(np.mean(losses)),
            "first_loss": losses[0],
            "val_mse": val["mse"],
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - epoch_start,
        }
        if args.test_every_epoch:
            entry["test_mse"] = evaluate(model, loaders["test"])["mse"]
        history.append(entry)
        log(
            f"epoch {epoch}: {len(losses)} steps, train loss {entry['train_loss']:.5f}, val mse {val['mse']:.5f}"
            + (f", test mse {entry['test_mse']:.5f}" if "test_mse" in entry else "")
            + f", lr {entry['lr']:.3g}, {entry['seconds']:.1f} s"
        )
        if val["mse"] <= best_mse:  # a tie counts as an improvement, as the official EarlyStopping
            best_mse, best_epoch, bad_epochs = val["mse"], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
            if bad_epochs >= args.patience:
                log(f"early stopping after epoch {epoch}: best val mse {best_mse:.5f} at epoch {best_epoch}")
                break
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(args.lr, epoch, args.epochs)

    model.load_state_dict(best_state)
    test = evaluate(model, loaders["test"])
    log(f"test mse {test['mse']:.4f} mae {test['mae']:.4f} (the state of epoch {best_epoch})")
    return {
        "test_metrics": test,
        "val_mse": best_mse,
        "epochs": len(history),
        "best_epoch": best_epoch,
        "steps": steps,
        "stopped_early": len(history) < args.epochs,
        "windows": {s: len(d) for s, d in data.items()},
        "history": history,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "jax_imported": "jax" in sys.modules,  # False when run as a script: the process's figures are PyTorch's
        "wall_s": time.perf_counter() - start,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ETTh1", choices=DATASETS)
    p.add_argument("--data-dir", "--data_dir", default=None, help="default $MIXER_ZOO_DATA, else ~/.cache/mixer_zoo")
    p.add_argument("--seq-len", "--seq_len", type=int, default=96)
    p.add_argument("--pred-len", "--pred_len", type=int, default=96)
    p.add_argument("--e-layers", "--e_layers", type=int, default=1)
    p.add_argument("--d-model", "--d_model", type=int, default=256)
    p.add_argument("--d-core", "--d_core", type=int, default=256)
    p.add_argument("--d-ff", "--d_ff", type=int, default=0, help="default 256, 512 at pred_len >= 336 (official)")
    p.add_argument("--batch-size", "--batch_size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=0, help="default: the training batch size (official)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--epochs", type=int, default=20, help="train_epochs: the cosine's length and the most epochs")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: every core)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (0: in-process)")
    p.add_argument("--max-steps", type=int, default=0, help="at most this many training steps per epoch (testing)")
    p.add_argument("--test-every-epoch", action="store_true", help="also evaluate the test split after each epoch")
    p.add_argument("--quiet", action="store_true", help="print only the result line")
    args = p.parse_args(argv)
    for name in ("seq_len", "pred_len", "e_layers", "d_model", "d_core", "batch_size", "epochs", "patience", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("d_ff", "eval_batch_size", "num_workers", "max_steps"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not 0 < args.lr:
        p.error(f"--lr must be > 0, got {args.lr}")
    args.data_dir = str(Path(args.data_dir).expanduser()) if args.data_dir else str(data_dir())
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    try:
        result = train(args, log=(lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True)))
    except (OSError, ValueError) as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(1) from None
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
