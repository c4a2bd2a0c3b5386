"""`python -m checkpoints`: look inside a weights file and convert one into a preset directory.

    python -m checkpoints inspect FILE                     # keys, shapes, dtypes; the family and converter it fits
    python -m checkpoints convert NAME [FILE] --out DIR    # converted, saved as a preset, verified by reloading

FILE is a path, a URL or `hf-hub:org/name[@revision]`; NAME a registered model (`mixer_s16_224`) or release
(`mixer_b16_224.goog_in1k`, whose file is the default). `convert` never overwrites DIR. The preset loads with
`checkpoints.load_pretrained(DIR)` and starts a run with `python -m train --config.init_from=DIR`. Every user
error is one line on stderr and exit status 2.
"""

import argparse
import functools
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

import checkpoints
import zoo
from checkpoints.convert import _CONVERTERS
from checkpoints.manager import save_variables
from checkpoints.pretrained import fetch, load_pretrained, read_state_dict
from checkpoints.tree import flatten


class UsageError(Exception):
    """A mistake of the caller: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see python -m checkpoints --help)")


@functools.cache
def _shapes(name: str, fields: tuple = ()) -> dict[str, tuple]:
    model = zoo.create_model(name, **dict(fields))
    return {k: tuple(v.shape) for k, v in flatten(zoo.abstract_variables(model)).items()}


def _pattern(keys) -> set[str]:
    return {re.sub(r"\d+", "#", k) for k in keys}  # block indices do not matter for the layout


def _family_matches(flat: dict) -> list[tuple[float, str, str, str]]:
    """(similarity, family, source, model), best first: 1.0 = the file's converted keys and shapes are exactly
    that registered model's; otherwise the share of key patterns (indices ignored) it has with the family.

    Costs one abstract trace per family (its first registered model), then one per model of a family that fits.
    """
    families: dict[str, list[str]] = {}
    for name in zoo.list_models():
        families.setdefault(zoo.get_entry(name).family, []).append(name)
    results = []
    for (family, source), (fn, infer_config) in sorted(_CONVERTERS.items()):
        if family not in families:
            continue
        try:
            converted = {k: tuple(np.shape(v)) for k, v in flatten(fn(dict(flat))).items()}
            fields = dict(infer_config(flat)) if infer_config else {}
            layout = _pattern(_shapes(families[family][0]))
        except Exception:  # a converter meeting another family's keys
            continue
        score = len(_pattern(converted) & layout) / max(len(_pattern(converted) | layout), 1)
        if score < 0.5:
            continue
        best = (min(score, 0.999), families[family][0])
        exact_fields = tuple(sorted(fields.items()))
        for name in families[family]:
            try:
                if _shapes(name).keys() == converted.keys() and _shapes(name, exact_fields) == converted:
                    best = (1.0, name)
                    break
            except Exception:
                continue
        results.append((*best[:1], family, source, best[1]))
    exact = [r for r in results if r[0] == 1.0]
    return exact or sorted(results, reverse=True)


def inspect(args) -> int:
    file = fetch(args.file)
    flat = read_state_dict(file, key=args.key)
    total = sum(math.prod(v.shape) for v in flat.values())
    print(f"{file}: {len(flat)} tensors, {total:,} values, sha256 {checkpoints.sha256_file(file)}")
    width = max((len(k) for k in flat), default=0)
    for key, value in flat.items():
        print(f"  {key:<{width}}  {tuple(value.shape)!s:<20} {value.dtype}")
    matches = _family_matches(flat)
    if not matches:
        print("matches: no registered family's converter fits these keys")
    for score, family, source, name in matches:
        if score == 1.0:
            print(f"matches: {name} (family {family}, converter {source!r}): every key and shape")
        else:
            print(
                f"looks like: family {family} (converter {source!r}), {score:.0%} of the key patterns; no "
                f"registered size has these shapes: load it with overrides, e.g. load_pretrained({name!r}, FILE, "
                f"source={source!r}, num_blocks=...)"
            )
    return 0


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--set takes FIELD=VALUE, got {pair!r}")
        try:
            out[field] = json.loads(value)
        except json.JSONDecodeError:
            out[field] = value
    return out


def _fields(model, entry) -> dict:
    """The constructor fields of `model` that differ from the registered defaults (what rebuilds it)."""
    out = {}
    for field in entry.accepted_fields():
        value = getattr(model, field)
        if value != entry.defaults.get(field, type(model).__dataclass_fields__[field].default):
            json.dumps(value)  # a preset's config is JSON
            out[field] = value
    return out


def convert(args) -> int:
    out = Path(args.out)
    if out.exists():
        raise UsageError(f"{out} exists; convert never overwrites: choose another --out")
    model, variables = load_pretrained(
        args.name, args.file, source=args.source, state_dict_key=args.key, **_overrides(args.set)
    )
    entry = zoo.get_entry(args.name)
    config = {"model_name": entry.name, "overrides": _fields(model, entry)}
    metadata = {"converted_from": args.file or zoo.pretrained_cfg(args.name).url, "release": args.name}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_variables(staging, variables, config=config, metadata=metadata)
        _, reloaded = load_pretrained(str(staging))
        expected, got = flatten(variables), flatten(reloaded)
        differ = [k for k in expected if k not in got or not np.array_equal(np.asarray(expected[k]), got[k])]
        if differ or expected.keys() != got.keys():
            raise RuntimeError(f"the preset written to {staging} does not reload identically: {differ[:5]}")
        if out.exists():
            raise UsageError(f"{out} appeared while converting; convert never overwrites")
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    count = sum(math.prod(np.shape(v)) for v in flatten(variables["params"]).values())
    print(f"wrote {out}: {entry.name} {config['overrides']}, {count:,} parameters, verified by reloading")
    print(f"load it with checkpoints.load_pretrained({str(out)!r}) or --config.init_from={out}")
    return 0


def main(argv=None) -> int:
    parser = _Parser(prog="python -m checkpoints", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = commands.add_parser("inspect", help="keys, shapes, dtypes and the matching family/converter of FILE")
    p.add_argument("file", help="a path, URL or hf-hub:org/name[@revision]")
    p.add_argument("--key", help="the nested state dict of a training checkpoint (state_dict, model_ema, ...)")
    p = commands.add_parser("convert", help="convert FILE for model NAME into a preset directory")
    p.add_argument("name", help="a registered model or release (zoo.list_models())")
    p.add_argument("file", nargs="?", help="a path, URL or hf-hub: name (default: the release's file)")
    p.add_argument("--out", required=True, help="the preset directory to create (must not exist)")
    p.add_argument("--source", help="the converter (official, timm, ...); default: the release's or official")
    p.add_argument("--key", help="the nested state dict of a training checkpoint (state_dict, model_ema, ...)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a constructor override")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    warnings.showwarning = lambda message, category, *_, **__: print(
        f"warning: {message}".replace("\n", " "), file=sys.stderr
    )
    try:
        args = parser.parse_args(argv)
        return inspect(args) if args.command == "inspect" else convert(args)
    except Exception as e:  # every failure is reported as one line, never a traceback
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"python -m checkpoints: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
