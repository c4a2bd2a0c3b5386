"""`python -m zoo`: the registered models as a table; `--update-readme README.md` rewrites the README's table."""

import argparse
import re
import sys
from pathlib import Path

import zoo
from zoo import cli

START, END = "<!-- models:start -->", "<!-- models:end -->"


def markdown_table() -> str:
    rows = [
        "| model | task | parameters | input | paper | pretrained |",
        "|---|---|---:|---|---|---|",
    ]
    for name in zoo.list_models():
        info = zoo.model_info(name)
        inputs = ", ".join(f"{k} {'x'.join(map(str, s))}" for k, s in info.input_spec.items())
        paper = f"[{info.paper.title}]({info.paper.url})"
        releases = ", ".join(info.pretrained) or ("none downloadable" if info.releases_note else "-")
        rows.append(f"| `{name}` | {info.task} | {info.num_params:,} | {inputs} | {paper} | {releases} |")
    return "\n".join(rows)


def readme_with_table(text: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"README has no {START} ... {END} block")
    block = f"{START}\n{markdown_table()}\n{END}"
    return re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo", description=__doc__)
    parser.add_argument("--update-readme", metavar="PATH", help="rewrite the model table between the markers")
    args = parser.parse_args(argv)

    def run() -> int:
        if args.update_readme:
            path = Path(args.update_readme)
            path.write_text(readme_with_table(path.read_text()))
            print(f"updated {path}")
        else:
            print(markdown_table())
        return 0

    return cli.run(run, parser.prog)


if __name__ == "__main__":
    sys.exit(main())
