"""The Markdown tables of docs/benchmarks.md, from the JSON files the benchmark runners wrote.

    python -m benchmarks.report                        # reads docs/benchmarks_data/
    python -m benchmarks.report --data runs/           # another folder of runner outputs

Reads `peers_*.json` (benchmarks.peers), `step.json` (benchmarks.step), `scaling.json` (benchmarks.scaling) and
`data_pipeline.json` (benchmarks.data_pipeline) and `xla_flags/*.json` (benchmarks.step under different
`XLA_FLAGS`), whichever exist, and prints one section per file with the command
and machine that produced it. Nothing is measured here: every number comes from a file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import scaling


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def provenance(machine: dict[str, Any]) -> str:
    """'`command`' on a line, then machine, versions and date."""
    versions = machine.get("versions", {})
    vs = ", ".join(f"{k} {v}" for k, v in versions.items() if k in ("jax", "jaxlib", "flax"))
    extra = f", XLA_FLAGS={machine['xla_flags']!r}" if machine.get("xla_flags") else ""
    return (
        f"`{machine.get('command', '?')}`  \n"
        f"{machine.get('date_utc', '?')} UTC, {machine.get('backend', '?')} ({machine.get('cpu', '?')}, "
        f"{machine.get('cpu_count', '?')} cores), {vs}{extra}"
    )


def peers_section(files: Sequence[Path]) -> str:
    out = []
    for path in files:
        data = _load(path)
        out.append(f"\n{provenance(data['machine'])}, torch {data.get('torch', '?')}\n")
        out.append("| model | overrides | batch | mode | ours (ex/s) | peer (ex/s) | ours / peer | peer |")
        out.append("|---|---|---:|---|---:|---:|---:|---|")
        for r in data["rows"]:
            sets = ", ".join(f"{k}={v}" for k, v in r.get("overrides", {}).items()) or "-"
            out.append(
                f"| `{r['model']}` | {sets} | {r['batch']} | {r['mode']} | {r['ours_per_s']:.2f} | "
                f"{r['peer_per_s']:.2f} | **{r['ratio']:.2f}** | {r['peer']} |"
            )
    return "\n".join(out)


def _num(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def step_section(path: Path) -> str:
    data = _load(path)
    rows = data["rows"]
    sources = sorted({r["peak_source"] for r in rows if r.get("peak_gflop_per_s")})
    out = [f"\n{provenance(data['machine'])}  \npeak FLOP/s ('peak' column): {'; '.join(sources) or 'none'}\n"]
    out.append(
        "| model | mode | batch | params | compile s | ms/step | ex/s | peak MB | XLA MB | GFLOP/step | GFLOP/s "
        "| peak GFLOP/s | % of peak |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        frac = r.get("fraction_of_peak")
        out.append(
            f"| `{r['model']}` | {r['mode']} | {r['batch']} | {r['num_params'] / 1e6:.1f}M | {r['compile_s']:.1f} | "
            f"{r['step_ms']:.0f} | {r['examples_per_s']:.2f} | {_num(r['peak_mem_mb'], '.0f')} | "
            f"{_num(r['xla_mem_mb'], '.0f')} | {_num(r['gflop_per_step'], '.1f')} | {_num(r['gflop_per_s'], '.0f')} | "
            f"{_num(r.get('peak_gflop_per_s'), '.0f')} | {_num(None if frac is None else 100 * frac, '.0f')} |"
        )
    return "\n".join(out)


def scaling_section(path: Path) -> str:
    data = _load(path)
    return f"\n{provenance(data['machine'])}\n" + scaling.markdown(data["rows"])


def data_pipeline_section(path: Path) -> str:
    data = _load(path)
    out = [f"\n{provenance(data['machine'])}, grain {data['machine'].get('grain', '?')}\n"]
    out.append("| configuration | batch | grain threads | worker processes | images/s | ms/image (1 thread) |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for r in data["rows"]:
        out.append(
            f"| {r['config']} | {r['batch']} | {r['threads']} | {r['workers']} | {r['images_per_s']:.0f} | "
            f"{r['ms_per_image']:.2f} |"
        )
    return "\n".join(out)


def xla_flags_section(files: Sequence[Path]) -> str:
    """One `benchmarks.step` file per XLA_FLAGS setting: the same model and mode under each."""
    out = ["\n| XLA_FLAGS | model | mode | batch | ms/step | ex/s | measured (UTC) |"]
    out.append("|---|---|---|---:|---:|---:|---|")
    for path in files:
        data = _load(path)
        flags = data["machine"].get("xla_flags") or "(none)"
        for r in data["rows"]:
            out.append(
                f"| `{flags}` | `{r['model']}` | {r['mode']} | {r['batch']} | {r['step_ms']:.0f} | "
                f"{r['examples_per_s']:.2f} | {data['machine']['date_utc']} |"
            )
    first = _load(files[0])["machine"]
    return f"\n{provenance(first)} (and the same under each XLA_FLAGS)\n" + "\n".join(out)


def report(folder: Path) -> str:
    sections = []
    peers = sorted(folder.glob("peers_*.json"))
    if peers:
        sections.append("## Side by side with PyTorch\n" + peers_section(peers))
    for name, title, fn in (
        ("step.json", "Step throughput, memory and FLOP utilisation", step_section),
        ("scaling.json", "Scaling", scaling_section),
        ("data_pipeline.json", "Input pipeline", data_pipeline_section),
    ):
        if (folder / name).exists():
            sections.append(f"## {title}\n" + fn(folder / name))
    flag_runs = sorted((folder / "xla_flags").glob("*.json"))
    if flag_runs:
        sections.append("## XLA flags\n" + xla_flags_section(flag_runs))
    if not sections:
        raise FileNotFoundError(f"no benchmark JSON files (peers_*.json, step.json, ...) in {folder}")
    return "\n\n".join(sections)


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / "docs" / "benchmarks_data"))
    args = p.parse_args(argv)
    text = report(Path(args.data))
    print(text)
    return text


if __name__ == "__main__":
    main()
