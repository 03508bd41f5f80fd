"""`prezoo COMMAND [options]`: every PreZoo command under one name; `prezoo COMMAND --help` for its options.

Each command is the `python -m PACKAGE` entry point it names below, run with the same options. Installed as a
console script, `prezoo` finds PreZoo's packages wherever it runs: a file of the working folder named like one of
them (an `export.py`, a `server/` folder) shadows it for `python -m ...`, never for `prezoo`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command: (package whose __main__ runs it, that entry point's subcommand or None, what it does); only the package
# the command names is imported, once the command line is parsed: `prezoo --help` loads no torch
COMMANDS = {
    "serve": ("server", None, "serve a zoo: REST API, Open Inference Protocol v2, UI"),
    "spaces": ("zoo", "spaces", "the built-in search spaces with their param/FLOP ranges"),
    "list": ("zoo", "list", "a zoo's entries"),
    "import-official": ("zoo", "import-official", "a zoo from an official AutoFormer/PreNAS checkpoint"),
    "get": ("export", "get", "budget -> exported model (HF folder, safetensors, ONNX fp32/INT8/fp16)"),
    "profile": ("export", "profile", "every entry's latency on this host, into the zoo's index"),
    "push": ("export", "push", "push a model or the whole zoo to the Hugging Face Hub"),
    "triton": ("export", "triton", "write a Triton model repository of zoo entries"),
    "select": ("training", "select", "preferred architectures: zero-cost, or --method darts|bossnas"),
    "bossnas": ("training", "bossnas", "BossNAS: label-free selection of preferred HyTra or MBConv paths"),
    "darts": ("training", "darts", "DARTS-style differentiable selection of preferred MBConv or HyTra paths"),
    "edmips": ("training", "edmips", "EdMIPS: per-layer weight bits of a zoo entry under bytes budgets"),
    "variants": ("training", "variants", "an entry's weights at fewer bytes (w16/w8/w4, EdMIPS): accuracy into the "
                                         "zoo's index"),
    "train": ("training", "train", "one-shot supernet training"),
    "evaluate": ("training", "evaluate", "accuracy of every preferred arch of a trained supernet"),
    "search": ("training", "search", "baseline search in a budget (evolution, aging, random, enas)"),
    "pick": ("training", "pick", "a zoo's entries searched bucket by bucket in a uniformly trained supernet"),
    "package": ("training", "package", "package an evaluated run into a zoo"),
    "finetune": ("training", "finetune", "fine-tune an exported subnet on an image folder"),
    "tune": ("training", "tune", "fine-tune every entry of a zoo standalone from its supernet weights, in place"),
}


def command_table() -> str:
    """`prezoo --help`'s list: each command, what it does, and the `python -m` form it equals."""
    rows = [f"  {name:<16} {what}  (python -m {package}{f' {sub}' if sub else ''})"
            for name, (package, sub, what) in COMMANDS.items()]
    return "commands:\n" + "\n".join(rows)


def parse_command(first: list[str]) -> str:
    """The command, from the first word alone: every later word is the command's own (its --help too)."""
    parser = argparse.ArgumentParser(prog="prezoo", usage="prezoo [-h] COMMAND [options]", description=__doc__,
                                     epilog=command_table(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND", help="one of the commands below")
    return parser.parse_args(first).command


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    package, sub, _ = COMMANDS[parse_command(argv[:1])]
    entry_point = importlib.import_module(f"{package}.__main__")
    return entry_point.main([sub, *argv[1:]] if sub else argv[1:])


if __name__ == "__main__":
    sys.exit(main())
