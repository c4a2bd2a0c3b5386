"""Side by side with PyTorch: our models against an independent PyTorch implementation of the same architecture.

    python -m benchmarks.peers --models mixer_s16_224,mixer_b16_224 --batch 16 --json runs/peers.json
    python -m benchmarks.peers --models softs:32 --json runs/peers_softs.json
    python -m benchmarks.peers --models softs:32 --set enc_in=321 --set pred_len=720

Peers: timm's `mixer_*` models for our MLP-Mixer (our side with exact GELU, as timm); for SOFTS, AFNO and AFFNet
the official architecture written plainly in PyTorch (`benchmarks/torch_softs.py`, `benchmarks/torch_afno.py`,
`benchmarks/torch_affnet.py`: module names of the official code, so their state dicts convert to ours with
`checkpoints.convert(name, ...)`, and the two agree in evaluation mode, tested).

Both sides get the same batch (our images NHWC, theirs the same values NCHW), the same input size and the same
number of threads (`torch.set_num_threads(os.cpu_count())`; JAX's CPU backend uses every core). When JAX runs on a
GPU and PyTorch sees CUDA, the peer runs on the GPU too (synchronised before each timestamp); otherwise on the CPU.
Training is a full step on both sides: forward in training mode, the loss (cross-entropy / MSE), backward and an
AdamW update (ours: the trainer's jitted, donated step of `benchmarks.step`; theirs: eager PyTorch,
`model.train()`, `torch.optim.AdamW`). Inference: our jitted apply with `train=False`; theirs `model.eval()` under
`torch.inference_mode()`. After compilation and `--warmup` steps on each side, the two are timed in alternation,
`--rounds` rounds of `--steps` steps each, and the medians are compared: ratio = ours / theirs in examples/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from benchmarks import step as bench_step
from benchmarks.torch_affnet import affnet_peer
from benchmarks.torch_afno import afno_peer
from benchmarks.torch_ffnet import ffnet_peer
from benchmarks.torch_msmlp import msmlp_peer
from benchmarks.torch_ninformer import ninformer_peer
from benchmarks.torch_softs import TorchSOFTS
from zoo.contract import as_hw

# ----------------------------------------------------------------------------------------------- peers


def timm_peer(name: str, model: Any) -> nn.Module:
    """timm's `MlpMixer` with our model's configuration (for `mixer_s16_224` etc. exactly timm's registered model)."""
    from timm.models.mlp_mixer import MlpMixer

    h, w = as_hw(model.img_size)
    if h != w:
        raise ValueError(f"{name}: the timm peer needs square images, got {model.img_size}")
    return MlpMixer(
        num_classes=model.num_classes,
        img_size=h,
        in_chans=model.in_chans,
        patch_size=model.patch_size,
        num_blocks=model.num_blocks,
        embed_dim=model.hidden_dim,
        mlp_ratio=(model.tokens_mlp_dim / model.hidden_dim, model.channels_mlp_dim / model.hidden_dim),
        drop_rate=model.drop_rate,
        proj_drop_rate=model.proj_drop_rate,
        drop_path_rate=model.drop_path_rate,
    )


def softs_peer(name: str, model: Any) -> nn.Module:
    del name
    fields = ("seq_len", "pred_len", "d_model", "d_core", "d_ff", "e_layers", "dropout", "use_norm")
    return TorchSOFTS(**{f: getattr(model, f) for f in fields})


# family -> (peer builder, the overrides that give our model the peer's numerics, peer description)
PEERS = {
    "mlp_mixer": (timm_peer, {"approximate_gelu": False}, "timm {timm} (PyTorch {torch} eager)"),
    "softs": (softs_peer, {}, "TorchSOFTS in benchmarks/torch_softs.py (PyTorch {torch} eager)"),
    "afno": (afno_peer, {}, "TorchAFNONet in benchmarks/torch_afno.py (PyTorch {torch} eager)"),
    "affnet": (affnet_peer, {}, "TorchAFFNet in benchmarks/torch_affnet.py (PyTorch {torch} eager)"),
    "ffnet": (ffnet_peer, {}, "TorchFFNet in benchmarks/torch_ffnet.py (PyTorch {torch} eager)"),
    "msmlp": (msmlp_peer, {}, "TorchMSMLP in benchmarks/torch_msmlp.py (PyTorch {torch} eager)"),
    "ninformer": (ninformer_peer, {}, "TorchNiNformer in benchmarks/torch_ninformer.py (PyTorch {torch} eager)"),
}


def peer_description(family: str) -> str:
    import timm

    return PEERS[family][2].format(timm=timm.__version__, torch=torch.__version__)


def torch_device() -> torch.device:
    """CUDA when JAX runs on a GPU and PyTorch sees one (both sides on the same kind of device), else the CPU."""
    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


class TorchRunner:
    """The peer's train step (AdamW) or inference on the batch of a `bench_step.Bench`."""

    def __init__(self, module: nn.Module, bench: bench_step.Bench, mode: str, seed: int = 0):
        torch.manual_seed(seed)
        self.device = torch_device()
        module = module.to(self.device)
        self.module, self.mode = module, mode
        host = {k: np.asarray(v) for k, v in bench.batch.items()}
        if bench.task_name == "classification":
            self.inputs = (torch.from_numpy(np.array(host["image"].transpose(0, 3, 1, 2), order="C")),)
            self.target = torch.from_numpy(np.array(host["label"], np.int64))
            self.loss = F.cross_entropy
        else:
            self.inputs = tuple(torch.from_numpy(np.array(host[k])) for k in ("x", "x_mark") if k in host)
            self.target = torch.from_numpy(np.array(host["y"]))
            self.loss = F.mse_loss
        self.inputs = tuple(t.to(self.device) for t in self.inputs)
        self.target = self.target.to(self.device)
        if mode == "train":
            module.train()
            self.opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.05)
        else:
            module.eval()
        self.last = None

    def run(self, steps: int) -> None:
        if self.mode == "train":
            for _ in range(steps):
                self.opt.zero_grad(set_to_none=True)
                loss = self.loss(self.module(*self.inputs), self.target)
                loss.backward()
                self.opt.step()
                self.last = loss.detach()
        else:
            with torch.inference_mode():
                for _ in range(steps):
                    self.last = self.module(*self.inputs)
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def check_finite(self) -> None:
        if self.last is not None and not torch.isfinite(self.last).all():
            raise FloatingPointError("peer: non-finite output")


def compare(
    name: str,
    batch_size: int,
    *,
    modes: Sequence[str] = bench_step.MODES,
    overrides: dict[str, Any] | None = None,
    rounds: int = 5,
    steps: int = 2,
    warmup: int = 2,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """One row per mode: our and the peer's examples/s (medians of alternating rounds) and their ratio."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    family = zoo.get_entry(name).family
    if family not in PEERS:
        raise ValueError(f"no PyTorch peer for {name} (family {family}); peers exist for {sorted(PEERS)}")
    build_peer, numerics, _ = PEERS[family]
    bench = bench_step.build(name, batch_size, {**(overrides or {}), **numerics})
    rows = []
    for mode in modes:
        ours = bench_step.Runner(bench, mode)
        theirs = TorchRunner(build_peer(name, bench.model), bench, mode)
        ours.run(warmup)
        theirs.run(warmup)
        ours_t, theirs_t = [], []
        for _ in range(rounds):
            for runner, times in ((ours, ours_t), (theirs, theirs_t)):
                t = time.perf_counter()
                runner.run(steps)
                times.append((time.perf_counter() - t) / steps)
        ours.check_finite()
        theirs.check_finite()
        ours.close()
        ours_s, theirs_s = statistics.median(ours_t), statistics.median(theirs_t)
        rows.append(
            {
                "model": name,
                "batch": batch_size,
                "mode": mode,
                "ours_per_s": batch_size / ours_s,
                "peer_per_s": batch_size / theirs_s,
                "ratio": theirs_s / ours_s,
                "peer": peer_description(family),
                "peer_device": str(theirs.device),
                "threads": threads,
                "overrides": bench_step._jsonable({**(overrides or {}), **numerics}),
                "ours_ms_all": [1e3 * t for t in ours_t],
                "peer_ms_all": [1e3 * t for t in theirs_t],
                "ours_compile_s": ours.lower_s + ours.compile_s,
                "rounds": rounds,
                "steps": steps,
                "warmup": warmup,
            }
        )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'model':16s} {'batch':>5s} {'mode':5s} {'ours ex/s':>10s} {'peer ex/s':>10s} {'ours/peer':>9s}  peer"]
    for r in rows:
        lines.append(
            f"{r['model'][:16]:16s} {r['batch']:5d} {r['mode']:5s} {r['ours_per_s']:10.2f} {r['peer_per_s']:10.2f} "
            f"{r['ratio']:9.2f}  {r['peer']}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_step.add_model_arguments(p, models="mixer_s16_224,mixer_b16_224,softs:32")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (medians are compared)")
    p.add_argument("--steps", type=int, default=2, help="steps per side per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side after compilation")
    p.add_argument("--threads", type=int, default=None, help="PyTorch threads (default os.cpu_count(), what JAX uses)")
    p.add_argument("--json", default=None, help="also write {machine, rows} to this file")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)
    modes = bench_step.parse_modes(args.modes)
    overrides = bench_step.parse_overrides(args.set)
    rows = []
    for name, batch in bench_step.parse_models(args.models, args.batch):
        rows += compare(
            name,
            batch,
            modes=modes,
            overrides=overrides,
            rounds=args.rounds,
            steps=args.steps,
            warmup=args.warmup,
            threads=args.threads,
        )
        print(format_table(rows[-len(modes) :]), flush=True)
    print(format_table(rows))
    if args.json:
        command = bench_step.command_line("benchmarks.peers", argv)
        bench_step.write_json(args.json, rows, command=command, torch=torch.__version__)
    return rows


if __name__ == "__main__":
    main()
