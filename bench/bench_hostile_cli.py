"""A battery of bad input against every `python -m training` subcommand: exit code 2 and one line, no traceback, no
hang, nothing half-written.

    .venv/bin/python -m bench.bench_hostile_cli

Builds small fixtures in a temp folder (image folders with symlink loops, links out of the folder, dangling links,
one class, an empty class, corrupt images, a pipe named like an image; preferred.json and run files that are not
JSON or of another schema; a trained one-step run; an exported model), then runs every case of `cases()`. Bad flags
(nan, inf, -1, 0, huge, non-numbers, empty strings, unknown choices) are refused by argparse before any work, and
bad files are read within a second: those run in this process through `training.__main__.main(argv)`, bounded by a
timer signal. Whatever walks an image folder, where a hang would hide, runs the real CLI in a subprocess with a
timeout, two at a time, as do a few cases of every subcommand. A case passes when it exits with 2, its stderr's last
line is one line ("error: ..." or argparse's "python -m training CMD: error: ...") naming the problem, no
"Traceback" appears, it ends within its bound and the folder it watches (its --out, or a run it must not touch) is
absent or unchanged after. Prints one row per subcommand, the failures, the slowest cases, the flags no case
reaches and the peak RSS; `tests/test_hostile_cli.py` runs the battery and asserts on it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.io import quote

ROOT = Path(__file__).resolve().parent.parent
RUN_SETTINGS = ("train", "--space", "mini", "--sampler", "uniform", "--data", "synthetic:64", "--no-augment",
                "--epochs", "0.5", "--batch-size", "32", "--warmup-epochs", "0", "--ckpt-every", "1", "--log-every",
                "1", "--no-progress")  # the fixture run's: one step
ERROR_LINE = re.compile(r"(python -m \w+( [\w-]+)?: )?(error: )?\S")  # ours, or argparse's (naming the command)
BAD_NUMBERS = ("nan", "inf", "-inf", "1e400", "1e30", "abc", "", " ", "9" * 400, "0x10", "1,5")
SUBPROCESS_SECONDS = 90.0  # importing torch on 2 busy cores, then at most a tiny refused run
IN_PROCESS_SECONDS = 20.0


@dataclass(frozen=True)
class Case:
    command: str  # the subcommand: the row it is counted in
    kind: str  # "flag", "file" or "folder"
    argv: tuple[str, ...]  # after `python -m training`
    names: str  # the error line must hold this (case-insensitive): the flag, the file, or the problem
    subprocess: bool = False
    watch: str | None = None  # a path besides its --out that must be absent or unchanged after the case (a run)
    program: str = "training"  # the package whose `python -m` entry point runs it

    @property
    def watched(self) -> list[str]:
        """Its --out and `watch`: what a refused case must leave as it found it."""
        out = [self.argv[i + 1] for i, a in enumerate(self.argv[:-1]) if a == "--out" and self.argv[i + 1].strip()]
        return out + ([self.watch] if self.watch else [])


@dataclass
class Outcome:
    case: Case
    code: int | None
    seconds: float
    last_line: str
    problem: str | None  # None: the case passed
    peak_kib: int = 0  # a subprocess's peak RSS (VmHWM, read while it runs)


# -- fixtures ---------------------------------------------------------------------------------------------------------
def write_images(folder: Path, n: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def image_folder(root: Path, classes: dict[str, int]) -> Path:
    """root/train/<class>/<n images>: a folder dataset."""
    for k, (name, n) in enumerate(classes.items()):
        write_images(root / "train" / name, n, seed=k)
    return root


def hostile_folders(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Image folders a training command must refuse, by name: (the folder, what its error names)."""
    folders: dict[str, tuple[Path, str]] = {}

    def make(name: str, names: str, classes: dict[str, int] | None = None) -> Path:
        root = image_folder(tmp / "folders" / name.replace(" ", "-"), classes or {"a": 12, "b": 12})
        folders[name] = (root, names)
        return root / "train"

    (tmp / "outside.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    train = make("two loop links", "symlink loop")  # os.walk(followlinks=True): 2^40 walks, no end
    os.symlink("..", train / "a" / "up")
    os.symlink("..", train / "a" / "up2")
    os.symlink(".", make("a loop link", "symlink loop") / "a" / "again")  # os.walk: every image 40 times
    os.symlink(tmp / "good", make("a folder link out", "leads out of") / "a" / "out")
    os.symlink(tmp / "outside.png", make("an image link out", "leads out of") / "a" / "x.png")
    os.symlink("nothing.png", make("a dangling link", "leads nowhere") / "a" / "x.png")
    os.symlink("x.png", make("a link to itself", "leads nowhere") / "a" / "x.png")
    os.symlink("../b", make("a class linked into another", "one label") / "a" / "b")
    os.mkfifo(make("a pipe named like an image", "not a regular file") / "a" / "x.png")
    make("one class", "at least 2", {"a": 12})
    (make("an empty class", "hold no images") / "c").mkdir()
    make("too few images for a default validation split", "--val-size", {"a": 3, "b": 3})
    train = make("corrupt images", "cannot read image", {"a": 0, "b": 0})
    for c in ("a", "b"):
        for i in range(12):
            (train / c / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * i)
    train = make("no train folder", "does not exist")
    train.rename(train.parent / "classes")
    if os.geteuid() != 0:  # root reads any folder
        (make("an unreadable class", "permission denied") / "b").chmod(0)
    return folders


@dataclass(frozen=True)
class Fixtures:
    tmp: Path
    a_file: Path  # an existing file (as --out, --run, --data)
    good: Path  # a 2-class image folder
    folders: dict[str, tuple[Path, str]]
    run: Path  # a trained one-step `mini` run (uniform sampler: no preferred set of its own)
    other_preferred: Path  # a preferred.json of another space
    model: Path  # an exported 10-class `mini` model
    zoo: Path  # the zoo it came from (Fashion-MNIST's classes)
    files: dict[str, Path]  # bad JSON files by name

    def out(self, name: str) -> str:
        """A fresh path for a case's --out (absent: it must stay absent)."""
        return str(self.tmp / "out" / name.replace(" ", "-").replace("/", "-"))


def bad_files(tmp: Path) -> dict[str, Path]:
    d = tmp / "files"
    d.mkdir()
    texts = {"not JSON": "{truncated", "a JSON list": "[1, 2]", "NaN": '{"kind": NaN}',
             "another kind": '{"kind": "prezoo.zoo", "schema_version": 1}',
             "a preferred.json without space": '{"kind": "prezoo.preferred", "schema_version": 1}',
             "a preferred.json with mistyped buckets": json.dumps(
                 {"kind": "prezoo.preferred", "schema_version": 1, "space": "mini", "buckets": 3}),
             "an empty file": "", "binary": "\x00\xff" * 100}
    files = {name: d / f"{name.replace(' ', '-')}.json" for name in texts}
    for name, text in texts.items():
        files[name].write_text(text, errors="surrogateescape")
    (d / "a folder").mkdir()
    files["a folder"] = d / "a folder"
    return files


def bad_runs(tmp: Path, run: Path) -> dict[str, Path]:
    """Run folders whose files are damaged or of another schema."""
    runs = {}
    for name, damage in (("no config.json", lambda r: (r / "config.json").unlink()),
                         ("config.json not JSON", lambda r: (r / "config.json").write_text("{")),
                         ("config.json a list", lambda r: (r / "config.json").write_text("[]")),
                         ("config.json with a NaN", lambda r: (r / "config.json").write_text('{"lr": NaN}')),
                         ("config.json of wrong types", lambda r: (r / "config.json").write_text(
                             '{"epochs": "ten", "sampler": "uniform"}')),
                         ("supernet.safetensors corrupt", lambda r: (r / "supernet.safetensors").write_bytes(b"x")),
                         ("eval_test.json not JSON", lambda r: (r / "eval_test.json").write_text("{")),
                         ("eval_test.json a list", lambda r: (r / "eval_test.json").write_text("[]")),
                         ("eval_test.json without results", lambda r: (r / "eval_test.json").write_text("{}"))):
        runs[name] = damaged_copy(run, tmp / "runs" / name.replace(" ", "-"), damage)
    return runs


def damaged_copy(source: Path, copy: Path, damage) -> Path:
    """A copy of the folder's files with `damage` applied to it."""
    copy.mkdir(parents=True)
    for p in source.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    damage(copy)
    return copy


def build_fixtures(tmp: Path) -> Fixtures:
    """Every file the cases read: a run and a model are trained or written for real (a few seconds)."""
    import torch

    from export.hf import write_hf_folder
    from training.select import SelectConfig, select, write_selection
    from zoo import BUILTIN_SPACES, SearchSpace, ViTSupernet, Zoo, ZooEntry, flops, params
    from zoo.store import write_zoo

    a_file = tmp / "a-file"
    a_file.write_text("not a folder\n")
    from training.__main__ import main as training_main

    run = tmp / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        if training_main([*RUN_SETTINGS, "--out", str(run)]) != 0:
            raise RuntimeError("the fixture run did not train")
    tiny = SearchSpace(name="hostile-tiny", embed_dims=(16, 24), depths=(2, 3), num_heads=(1, 2),
                       mlp_ratios=(1.5, 2.0), head_dim=8, patch_size=4, img_size=16, in_chans=3, num_classes=5)
    other = write_selection(select(SelectConfig(tiny, batch_size=4, progress=False)), tmp / "other-select")
    mini = BUILTIN_SPACES["mini"]
    torch.manual_seed(0)
    a = mini.smallest_arch()
    zoo_dir = write_zoo(tmp / "zoo", name="hostile", space=mini, state=ViTSupernet(mini).state_dict(),
                        entries=[ZooEntry(a, params(mini, a), flops(mini, a), 50.0, 90.0, 1.0)],
                        classes=[f"c{i}" for i in range(10)], preprocessing={
                            "img_size": 28, "in_chans": 1, "crop_pct": 1.0, "interpolation": "bicubic",
                            "mean": [0.286], "std": [0.353]}, dataset="hostile", eval_protocol="none")
    zoo = Zoo.load(zoo_dir)
    model = write_hf_folder(zoo, zoo.entries[0], tmp / "model")
    files = bad_files(tmp)
    for name, damage in (("a model without config.json", lambda m: (m / "config.json").unlink()),
                         ("a model whose config.json is not JSON", lambda m: (m / "config.json").write_text("{")),
                         ("a model whose config.json has no space", lambda m: (m / "config.json").write_text("{}"))):
        files[name] = damaged_copy(model, tmp / "models" / name.replace(" ", "-"), damage)
    files.update(bad_runs(tmp, run))
    return Fixtures(tmp, a_file, image_folder(tmp / "good", {"a": 12, "b": 12}), hostile_folders(tmp), run, other,
                    model, zoo_dir, files)


# -- cases ------------------------------------------------------------------------------------------------------------
def setting(argv: list[str] | tuple[str, ...], flag: str, value: str) -> tuple[str, ...]:
    """`argv` with `flag` set to `value`: replaced where given, else added."""
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
        return tuple(argv)
    return (*argv, flag, value)


def flag_cases(command: str, base: tuple[str, ...], numeric: dict[str, tuple[str, ...]], choices: dict[str, str],
               strings: tuple[str, ...], switches: tuple[str, ...] = ()) -> list[Case]:
    """Every numeric flag with every bad number and its own out-of-range ones; unknown choices; empty strings; a
    value given to an on/off switch; an unknown flag. All refused by argparse: in this process."""
    out = [Case(command, "flag", setting(base, flag, v), flag) for flag, own in numeric.items()
           for v in (*BAD_NUMBERS, *own)]
    out += [Case(command, "flag", setting(base, flag, v), flag) for flag, v in choices.items()]
    out += [Case(command, "flag", setting(base, flag, v), flag) for flag in strings for v in ("", "   ")]
    out += [Case(command, "flag", (*base, f"{flag}=1"), flag) for flag in switches]
    out.append(Case(command, "flag", (*base, "--no-such-flag", "1"), "--no-such-flag"))
    return out


def out_cases(command: str, base: tuple[str, ...], fx: Fixtures) -> list[Case]:
    """--out that cannot be a folder: an existing file, a path under a file, a broken link."""
    a_file, broken = str(fx.a_file), str(fx.tmp / "broken-link")
    if not os.path.lexists(broken):
        os.symlink(fx.tmp / "nothing-here", broken)
    return [Case(command, "file", setting(base, "--out", a_file), "is a file"),
            Case(command, "file", setting(base, "--out", f"{a_file}/sub"), "is a file", watch=a_file),
            Case(command, "file", setting(base, "--out", broken), "broken link"),
            Case(command, "file", setting(base, "--out", a_file), "is a file", subprocess=True)]


def select_cases(fx: Fixtures) -> list[Case]:
    out = fx.out("select")
    base = ("select", "--space", "mini", "--out", out, "--no-plot")
    budget = ("0", "-1", "5", "999", "0.5", "1e14")
    cases = flag_cases("select", base, {"--seed": ("-1", "4294967296", "1.5"), "--batch-size": ("0", "-1", "5000"),
                                        "--top-n": ("0", "-1", "1001"), "--low": budget, "--high": budget,
                                        "--width": budget, "--evaluations": ("0", "-1", "1.5", "1e9"),
                                        "--population": ("0", "-1", "100001")},
                       {"--proxy": "magic", "--bucket-by": "latency", "--method": "magic"},
                       ("--space", "--data", "--out"))
    cases += out_cases("select", base, fx)
    mbconv = setting(base, "--space", "mbconv-tiny")
    cases += [Case("select", "flag", setting(base, "--evaluations", "5"), "--evaluations does not apply"),
              Case("select", "flag", setting(mbconv, "--proxy", "snip"), "--proxy does not apply"),
              Case("select", "flag", setting(mbconv, "--bucket-by", "flops"), "--bucket-by does not apply"),
              Case("select", "file", setting(mbconv, "--data", "nowhere:x"), "unknown data source")]
    cases += [Case("select", "flag", ("select", "--out", out), "--space"),
              Case("select", "flag", setting(base, "--low", "2M"), "--low 2M"),
              Case("select", "flag", setting(base, "--high", "5K"), "--high 5K"),
              Case("select", "flag", (*base, "--low", "0.5M", "--high", "0.2M"), "--low"),
              Case("select", "flag", setting(base, "--width", "1M"), "no bucket fits"),
              Case("select", "file", setting(base, "--space", "nowhere"), "unknown search space"),
              Case("select", "file", setting(base, "--data", "nowhere:x"), "unknown data source"),
              Case("select", "file", setting(base, "--data", "nowhere:x"), "unknown data source", subprocess=True)]
    cases += [Case("select", "file", setting(base, "--space", str(fx.files[f])), "search space")
              for f in ("not JSON", "a JSON list", "an empty file", "a folder")]
    return cases


def bossnas_cases(fx: Fixtures) -> list[Case]:
    out = fx.out("bossnas")
    base = ("bossnas", "--out", out)
    cases = flag_cases("bossnas", base, {"--epochs-per-block": ("0", "-1", "1001"), "--nas-train": ("0", "-1"),
                                         "--nas-val": ("0", "-1"), "--batch-size": ("0", "-1", "65537"),
                                         "--paths": ("0", "-1", "1025"), "--seed": ("-1",),
                                         "--threads": ("0", "-1", "1025"), "--centre-paths": ("0", "1", "4097"),
                                         "--evaluations": ("0", "-1", "100001"), "--population": ("0", "-1")},
                       {"--target": "teacher"}, ("--space", "--data", "--out"))
    cases += out_cases("bossnas", base, fx)
    mbconv = (*base, "--space", "mbconv-tiny")
    cases += [Case("bossnas", "file", setting(base, "--space", "nowhere"), "unknown search space"),
              Case("bossnas", "flag", setting(base, "--space", "mini"), "does not serve"),
              Case("bossnas", "flag", setting(base, "--centre-paths", "8"), "--centre-paths does not apply"),
              Case("bossnas", "flag", setting(mbconv, "--paths", "1000"), "paths 1000 exceeds"),
              Case("bossnas", "file", setting(mbconv, "--data", "synthetic:64"), "leaves no training data"),
              Case("bossnas", "file", setting(base, "--data", "nowhere:x"), "unknown data source"),
              Case("bossnas", "file", setting(base, "--data", "synthetic:64"), "leaves no training data"),
              Case("bossnas", "file", (*base, "--nas-train", "100", "--batch-size", "200"), "no full batch"),
              Case("bossnas", "folder", setting(base, "--data", f"folder:{fx.good}"), "in_chans must be 3",
                   subprocess=True)]
    return cases


TRAIN_NUMERIC = {"--sandwich": ("-2", "65"), "--img-size": ("0", "-1", "4097"), "--in-chans": ("0", "-1", "17"),
                 "--val-size": ("-1", "1.5"), "--epochs": ("0", "-1", "10001"), "--batch-size": ("0", "-1"),
                 "--lr": ("0", "-1", "11"), "--min-lr": ("-1",), "--warmup-epochs": ("-1",),
                 "--weight-decay": ("-1", "11"), "--label-smoothing": ("-1", "1", "2"), "--mixup": ("-1",),
                 "--cutmix": ("-1",), "--drop-path": ("-1", "1"), "--clip-grad": ("-1",), "--seed": ("-1",),
                 "--ckpt-every": ("0", "-1"), "--log-every": ("0", "-1"), "--workers": ("-1", "257"),
                 "--crop-padding": ("-1", "65"), "--random-erasing": ("-1", "1"), "--ema": ("-1", "1")}


def train_cases(fx: Fixtures) -> list[Case]:
    out = fx.out("train")
    base = ("train", "--space", "mini", "--sampler", "uniform", "--data", "synthetic:64", "--no-augment", "--out",
            out, "--no-progress")
    cases = flag_cases("train", base, TRAIN_NUMERIC, {"--sampler": "magic"},
                       ("--space", "--data", "--preferred", "--auto-augment", "--out"),
                       ("--augment", "--amp", "--compile", "--progress", "--allow-changed-settings", "--distill"))
    cases += out_cases("train", base, fx)
    cases += [Case("train", "flag", ("train", "--space", "mini", "--out", out), "needs --preferred"),
              Case("train", "flag", (*base, "--distill"), "needs the sandwich rule"),
              Case("train", "flag", setting(base, "--sampler", "option-balanced"), "named decisions"),
              Case("train", "file", setting(base, "--crop-padding", "2"), "random_crop_padding needs augment"),
              Case("train", "flag", setting(base, "--lr", "nan"), "--lr", subprocess=True),
              Case("train", "file", setting(base, "--space", "nowhere"), "unknown search space"),
              Case("train", "file", setting(base, "--data", "nowhere:x"), "unknown data source"),
              Case("train", "file", setting(setting(base, "--data", "fashion-mnist"), "--val-size", "60000"),
                   "leaves no training data"),
              Case("train", "file", setting(setting(base, "--data", f"folder:{fx.good}"), "--auto-augment",
                                            "garbage"), "auto_augment")]
    preferred = setting(base, "--sampler", "preferred")
    cases += [Case("train", "file", setting(preferred, "--preferred", str(fx.files[f])), fx.files[f].name)
              for f in ("not JSON", "a JSON list", "NaN", "another kind", "a preferred.json without space",
                        "a preferred.json with mistyped buckets", "an empty file", "binary", "a folder")]
    cases += [Case("train", "file", setting(preferred, "--preferred", str(fx.tmp / "absent.json")), "absent.json"),
              Case("train", "file", setting(preferred, "--preferred", str(fx.other_preferred)),
                   "was selected on space hostile-tiny"),
              Case("train", "file", setting(preferred, "--preferred", str(fx.files["not JSON"])), "not-JSON.json",
                   subprocess=True)]
    again = setting(RUN_SETTINGS, "--out", str(fx.run))
    cases += [Case("train", "file", setting(again, "--space", "micro-hytra"), "another space"),
              Case("train", "file", setting(again, "--seed", "1"), "another seed"),
              Case("train", "file", setting(again, "--lr", "0.5"), "other settings", subprocess=True)]
    folder = (*base, "--in-chans", "3", "--val-size", "1")
    cases += [Case("train", "folder", setting(folder, "--data", f"folder:{fx.folders[f][0]}"), fx.folders[f][1],
                   subprocess=True)
              for f in ("two loop links", "a loop link", "an image link out", "a pipe named like an image",
                        "one class")]
    cases.append(Case("train", "folder", setting(folder, "--data", f"folder:{fx.good}"),
                      "has 2 classes but space mini has 10", subprocess=True))
    return cases


def evaluate_cases(fx: Fixtures) -> list[Case]:
    run = str(fx.run)
    base = ("evaluate", "--run", run)
    cases = flag_cases("evaluate", base, {"--batch-size": ("0", "-1", "65537")}, {"--split": "train"},
                       ("--run", "--preferred", "--zoo"), ("--write",))
    zoo, kept = ("evaluate", "--zoo", str(fx.zoo), "--split", "val", "--write"), str(fx.zoo)
    cases += [Case("evaluate", "file", zoo, "records no training settings", watch=kept),
              Case("evaluate", "file", zoo, "records no training settings", subprocess=True, watch=kept),
              Case("evaluate", "file", setting(zoo, "--split", "test"), "--write records validation", watch=kept),
              Case("evaluate", "file", (*base, "--write"), "give --zoo", watch=run),
              Case("evaluate", "file", setting(zoo, "--zoo", str(fx.tmp / "absent")), "absent")]
    cases += [Case("evaluate", "flag", ("evaluate",), "--run"),
              Case("evaluate", "file", base, "no preferred set", watch=run),
              Case("evaluate", "file", base, "no preferred set", subprocess=True, watch=run),
              Case("evaluate", "file", (*base, "--preferred", str(fx.other_preferred)), "for space hostile-tiny",
                   watch=run),
              Case("evaluate", "file", (*base, "--preferred", str(fx.files["not JSON"])), "not-JSON.json", watch=run),
              Case("evaluate", "file", setting(base, "--run", str(fx.tmp / "absent")), "absent"),
              Case("evaluate", "file", setting(base, "--run", str(fx.a_file)), "a-file"),
              Case("evaluate", "file", setting(base, "--run", str(fx.good)), "config.json is missing")]
    cases += [Case("evaluate", "file", ("evaluate", "--run", str(fx.files[d]), "--preferred", str(fx.other_preferred)),
                   "config.json" if "config.json" in d else "supernet.safetensors", watch=str(fx.files[d]))
              for d in ("no config.json", "config.json not JSON", "config.json a list", "config.json with a NaN",
                        "config.json of wrong types", "supernet.safetensors corrupt")]
    return cases


def search_cases(fx: Fixtures) -> list[Case]:
    out, run = fx.out("search"), str(fx.run)
    base = ("search", "--run", run, "--max-params", "0.3M", "--out", out)
    budget = ("0", "-1", "5", "999", "1e14")
    cases = flag_cases("search", base, {"--evaluations": ("0", "-1", "10000001"), "--min-params": budget,
                                        "--max-params": budget, "--min-flops": budget, "--max-flops": budget,
                                        "--population": ("0", "-1", "100001"), "--generations": ("0", "-1"),
                                        "--sample": ("0", "-1"), "--val-images": ("-1",), "--seed": ("-1",),
                                        "--controller-lr": ("0", "-1", "11"), "--baseline-decay": ("-1", "1"),
                                        "--entropy-weight": ("-1", "1001")},
                       {"--algorithm": "simulated-annealing"}, ("--run", "--out"))
    cases += out_cases("search", base, fx)
    cases += [Case("search", "flag", ("search", "--max-params", "0.3M"), "--run"),
              Case("search", "file", ("search", "--run", run), "give a budget", watch=run),
              Case("search", "file", setting(base, "--max-params", "1K"), "no architecture of mini fits"),
              Case("search", "file", (*base, "--min-params", "0.4M"), "must be below max_params"),
              Case("search", "file", setting(base, "--max-params", "1K"), "no architecture of mini fits",
                   subprocess=True),
              Case("search", "file", setting(base, "--run", str(fx.files["config.json a list"])), "JSON object")]
    return cases


def pick_cases(fx: Fixtures) -> list[Case]:
    out, run = fx.out("pick"), str(fx.run)
    base = ("pick", "--run", run, "--out", out, "--evaluations", "2", "--population", "2")
    cases = flag_cases("pick", base, {"--evaluations": ("0", "-1", "10000001"), "--population": ("0", "-1", "100001"),
                                      "--top-n": ("0", "-1", "100001"), "--val-images": ("-1",), "--seed": ("-1",),
                                      "--bucket-ratio": ("1", "0", "-2", "16.5"), "--jobs": ("0", "-1", "17")},
                       {"--algorithm": "darts"}, ("--run", "--out"))
    cases += out_cases("pick", base, fx)
    cases += [Case("pick", "flag", ("pick", "--out", out), "--run"),
              Case("pick", "file", base, "holds no validation images", watch=run),
              Case("pick", "file", base, "holds no validation images", subprocess=True, watch=run),
              Case("pick", "file", setting(base, "--jobs", "2"), "holds no validation images", subprocess=True,
                   watch=run),
              Case("pick", "file", setting(base, "--run", str(fx.tmp / "absent")), "config.json is missing"),
              Case("pick", "file", setting(base, "--run", str(fx.files["config.json a list"])), "JSON object")]
    return cases


DARTS_NUMERIC = {"--nas-train": ("0", "-1"), "--nas-val": ("0", "-1"), "--batch-size": ("0", "-1", "65537"),
                 "--warmup-steps": ("-1",), "--steps": ("0", "-1"), "--weight-lr": ("0", "-1", "11"),
                 "--weight-decay": ("-1", "11"), "--arch-lr": ("0", "-1"), "--arch-weight-decay": ("-1",),
                 "--cost-weight": ("-1",), "--tau-start": ("0", "-1", "101"), "--tau-end": ("0", "-1"),
                 "--collapse-share": ("0", "-1", "1.5"), "--eval-every": ("0", "-1"), "--eval-images": ("0", "-1"),
                 "--top-n": ("0", "-1", "1001"), "--seed": ("-1",), "--threads": ("0", "-1", "1025"),
                 "--low": ("0", "-1", "5", "999"), "--high": ("0", "-1", "5"), "--width": ("0", "-1", "5")}


def darts_cases(fx: Fixtures) -> list[Case]:
    out = fx.out("darts")
    base = ("darts", "--space", "mbconv-tiny", "--data", "synthetic:64", "--out", out, "--nas-train", "32",
            "--nas-val", "16", "--batch-size", "8", "--warmup-steps", "1", "--steps", "1", "--eval-images", "8")
    cases = flag_cases("darts", base, DARTS_NUMERIC, {}, ("--space", "--data", "--out"))
    cases += out_cases("darts", base, fx)
    cases += [Case("darts", "file", setting(base, "--space", "mini"), "built from named decisions: hytra, mbconv"),
              Case("darts", "file", setting(base, "--space", "nowhere"), "unknown search space"),
              Case("darts", "file", setting(base, "--data", "nowhere:x"), "unknown data source"),
              Case("darts", "file", setting(base, "--nas-train", "100"), "exceed the 64 images"),
              Case("darts", "file", setting(base, "--low", "2M"), "must be below --high"),
              Case("darts", "file", setting(base, "--nas-train", "100"), "exceed the 64 images", subprocess=True)]
    return cases


EDMIPS_NUMERIC = {"--steps": ("0", "-1", "100001"), "--batch-size": ("0", "-1", "65537"),
                  "--arch-lr": ("0", "-1", "11"), "--weight-lr": ("-1", "11"), "--cost-weight": ("-1", "1e7"),
                  "--arch-images": ("0", "-1"), "--seed": ("-1",), "--threads": ("0", "-1", "1025"),
                  "--budgets": ("0", "-1", "5", "999", "1e14")}


def edmips_cases(fx: Fixtures) -> list[Case]:
    out = fx.out("edmips")
    base = ("edmips", "--zoo", "ladder-fmnist", "--entry", "e32-d1-b8d459ce", "--out", out, "--steps", "1",
            "--budgets", "20K")
    cases = flag_cases("edmips", base, EDMIPS_NUMERIC, {}, ("--zoo", "--entry", "--out"))
    cases += out_cases("edmips", base, fx)
    cases += [Case("edmips", "flag", ("edmips", "--zoo", "ladder-fmnist"), "--entry"),
              Case("edmips", "file", setting(base, "--entry", "nope"), "no entry 'nope'"),
              Case("edmips", "file", setting(base, "--budgets", "1K"), "under the smallest this model makes"),
              Case("edmips", "file", setting(base, "--budgets", "1K"), "under the smallest", subprocess=True),
              Case("edmips", "file", setting(base, "--arch-images", "5000"), "leaves none of the 5000"),
              Case("edmips", "file", setting(base, "--zoo", str(fx.tmp / "absent")), "absent"),
              Case("edmips", "file", setting(setting(base, "--zoo", str(fx.zoo)), "--entry", "nope"), "no entry")]
    return cases


def variants_cases(fx: Fixtures) -> list[Case]:
    """`variants` rewrites a zoo's index: every refused case leaves the fixture zoo as it was (`watch`)."""
    zoo = str(fx.zoo)
    base = ("variants", "--zoo", zoo, "--bits", "8")
    cases = [Case("variants", "flag", setting(base, "--bits", v), "--bits", watch=zoo)
             for v in ("", " ", "3", "32", "8,8", "8,", "abc", "nan", "-8", "1e400", "16;8", "9" * 400)]
    cases += [Case(c.command, c.kind, c.argv, c.names, watch=zoo)
              for c in flag_cases("variants", base, {"--batch-size": ("0", "-1", "65537"),
                                                     "--threads": ("0", "-1", "1025")}, {}, ("--zoo", "--edmips"))]
    cases += [Case("variants", "flag", ("variants", "--bits", "8"), "--zoo"),
              Case("variants", "file", base, "records no validation accuracy", watch=zoo),
              Case("variants", "file", base, "records no validation accuracy", subprocess=True, watch=zoo),
              Case("variants", "file", (*base, "--edmips", str(fx.tmp / "absent")), "no such folder", watch=zoo),
              Case("variants", "file", (*base, "--edmips", str(fx.a_file)), "no such folder", watch=zoo),
              Case("variants", "file", setting(base, "--zoo", str(fx.tmp / "absent")), "absent")]
    return cases


def package_cases(fx: Fixtures) -> list[Case]:
    out = fx.out("package")
    base = ("package", "--run", str(fx.run), "--out", out, "--name", "z")
    cases = flag_cases("package", base, {"--max-fp16-drift": ("-1", "101")}, {}, ("--run", "--out", "--name"))
    cases += out_cases("package", base, fx)
    cases += [Case("package", "flag", ("package", "--run", str(fx.run)), "--out"),
              Case("package", "file", base, "eval_test.json is missing"),
              Case("package", "file", base, "eval_test.json is missing", subprocess=True),
              Case("package", "file", setting(base, "--run", str(fx.tmp / "absent")), "absent")]
    cases += [Case("package", "file", setting(base, "--run", str(fx.files[d])), "eval_test.json")
              for d in ("eval_test.json not JSON", "eval_test.json a list", "eval_test.json without results")]
    return cases


def finetune_cases(fx: Fixtures) -> list[Case]:
    out = fx.out("finetune")
    base = ("finetune", "--model", str(fx.model), "--data", f"folder:{fx.good}", "--out", out, "--epochs", "1",
            "--batch-size", "64", "--no-progress")
    cases = flag_cases("finetune", base, {"--epochs": ("0", "-1", "1.5", "10001"), "--lr": ("0", "-1"),
                                          "--batch-size": ("0", "-1"), "--warmup-epochs": ("-1",),
                                          "--weight-decay": ("-1",), "--label-smoothing": ("-1", "1", "2"),
                                          "--val-size": ("0", "-1"), "--distill-alpha": ("-1", "2"),
                                          "--distill-temperature": ("0", "-1"), "--seed": ("-1",)},
                       {}, ("--model", "--data", "--out", "--distill"), ("--augment", "--progress"))
    cases += [Case("finetune", "flag", ("finetune", "--data", f"folder:{fx.good}"), "--model"),
              Case("finetune", "flag", setting(base, "--label-smoothing", "nan"), "--label-smoothing",
                   subprocess=True),
              Case("finetune", "flag", setting(base, "--label-smoothing", "2"), "--label-smoothing",
                   subprocess=True)]
    cases += out_cases("finetune", base, fx)
    cases += [Case("finetune", "file", setting(base, "--model", str(fx.files[m])), "config")
              for m in ("a model without config.json", "a model whose config.json is not JSON",
                        "a model whose config.json has no space")]
    cases += [Case("finetune", "file", setting(base, "--model", str(fx.tmp / "absent")), "no config.json"),
              Case("finetune", "file", setting(base, "--model", "hf-hub:nobody/nothing"), "nobody/nothing",
                   subprocess=True),
              Case("finetune", "file", (*base, "--distill", str(fx.tmp / "absent")), "absent", subprocess=True),
              Case("finetune", "file", (*base, "--distill", str(fx.zoo)), "needs the data's classes",
                   subprocess=True)]
    cases += [Case("finetune", "folder", setting(base, "--data", f"folder:{root}"), names, subprocess=True)
              for root, names in fx.folders.values()]
    cases += [Case("finetune", "folder", setting(base, "--data", f"folder:{fx.tmp / 'absent'}"), "does not exist",
                   subprocess=True),
              Case("finetune", "folder", setting(base, "--data", f"folder:{fx.a_file}"), "does not exist"),
              Case("finetune", "folder", setting(base, "--data", "nowhere:x"), "unknown data source")]
    return cases


def tune_cases(fx: Fixtures) -> list[Case]:
    """`tune` rewrites a zoo in place: every refused case leaves the fixture zoo as it was (`watch`)."""
    zoo, work = str(fx.zoo), fx.out("tune")
    base = ("tune", "--zoo", zoo, "--work", work, "--epochs", "1", "--no-progress")
    cases = [Case(c.command, c.kind, c.argv, c.names, watch=zoo)
             for c in flag_cases("tune", base, {"--epochs": ("0", "-1", "1.5", "10001"), "--lr": ("0", "-1"),
                                                "--min-lr": ("-1",), "--batch-size": ("0", "-1"),
                                                "--warmup-epochs": ("-1",), "--weight-decay": ("-1",),
                                                "--label-smoothing": ("-1", "1", "2"), "--crop-padding": ("-1", "9"),
                                                "--seed": ("-1",), "--jobs": ("0", "-1", "17")},
                                 {}, ("--zoo", "--work"), ("--augment", "--progress"))]
    cases += [Case("tune", "flag", ("tune", "--work", work), "--zoo"),
              Case("tune", "flag", ("tune", "--zoo", zoo), "--work"),
              Case("tune", "file", base, "records no training settings", watch=zoo),
              Case("tune", "file", base, "records no training settings", subprocess=True, watch=zoo),
              Case("tune", "file", setting(base, "--work", str(fx.a_file)), "is a file", watch=zoo),
              Case("tune", "file", setting(base, "--zoo", str(fx.tmp / "absent")), "absent"),
              Case("tune", "file", setting(base, "--zoo", str(fx.a_file)), "a-file")]
    return cases


def cases(fx: Fixtures) -> list[Case]:
    return [*select_cases(fx), *bossnas_cases(fx), *train_cases(fx), *evaluate_cases(fx), *search_cases(fx),
            *pick_cases(fx), *darts_cases(fx), *edmips_cases(fx), *variants_cases(fx),
            *package_cases(fx), *finetune_cases(fx), *tune_cases(fx),
            Case("(none)", "flag", (), "required"), Case("(none)", "flag", ("nope",), "invalid choice"),
            Case("(none)", "flag", ("",), "invalid choice")]


def uncovered(battery_cases: list[Case]) -> list[str]:
    """Flags of a subcommand (as its parser defines them) that no case of the battery gives that subcommand."""
    from training.__main__ import COMMANDS

    given = {(c.command, a.split("=")[0]) for c in battery_cases for a in c.argv if a.startswith("--")}
    missing = []
    for name, (_, add_args, _) in COMMANDS.items():
        parser = argparse.ArgumentParser()
        add_args(parser)
        missing += [f"{name} {flag}" for action in parser._actions for flag in action.option_strings
                    if flag.startswith("--") and flag != "--help" and not flag.startswith("--no-")
                    and (name, flag) not in given]
    return missing


# -- running and judging ----------------------------------------------------------------------------------------------
class Hang(BaseException):
    """Raised by the timer in an in-process case past its bound (a BaseException: no `except Exception` eats it)."""


def snapshot(path: str) -> object:
    """What a watched path holds (names, sizes, modification times), to tell whether a case changed it."""
    if not os.path.lexists(path):
        return None
    if not os.path.isdir(path):
        st = os.lstat(path)
        return st.st_size, st.st_mtime_ns
    return sorted((os.path.relpath(os.path.join(d, n), path), os.lstat(os.path.join(d, n)).st_size,
                   os.lstat(os.path.join(d, n)).st_mtime_ns) for d, dirs, files in os.walk(path)
                  for n in dirs + files)


def run_in_process(case: Case) -> tuple[int | None, str, str, int]:
    """(exit code, all output, stderr, 0) of `main(argv)` here, stopped by a timer past its bound."""
    main = importlib.import_module(f"{case.program}.__main__").main

    out, err = io.StringIO(), io.StringIO()

    def stop(*_):
        raise Hang

    signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, IN_PROCESS_SECONDS)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(case.argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except Hang:
            code = None
        except Exception:
            traceback.print_exc()
            code = None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return code, out.getvalue() + err.getvalue(), err.getvalue(), 0


def run_subprocess(case: Case) -> tuple[int | None, str, str, int]:
    """(exit code, all output, stderr, peak RSS in KiB) of the real CLI, killed past its bound. The peak is read from
    /proc while it runs: getrusage(RUSAGE_CHILDREN) would report this process's own size, which a child's ru_maxrss
    inherits at fork."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    deadline, peak = time.monotonic() + SUBPROCESS_SECONDS, 0
    with subprocess.Popen([sys.executable, "-m", case.program, *case.argv], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, errors="replace") as p:
        while True:
            try:
                out, err = p.communicate(timeout=0.2)
                return p.returncode, out + err, err, peak
            except subprocess.TimeoutExpired:
                peak = max(peak, vm_hwm_kib(p.pid))
                if time.monotonic() > deadline:
                    p.kill()
                    p.communicate()
                    return None, "", "", peak


def vm_hwm_kib(pid: int) -> int:
    """A running process's peak RSS (VmHWM) in KiB; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def run_case(case: Case) -> Outcome:
    before = [snapshot(p) for p in case.watched]
    t = time.perf_counter()
    code, output, stderr, peak = (run_subprocess if case.subprocess else run_in_process)(case)
    seconds = time.perf_counter() - t
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    problem = judge(case, code, output, last, seconds) or \
        next((f"{p} changed" for p, old in zip(case.watched, before, strict=True) if snapshot(p) != old), None)
    return Outcome(case, code, seconds, last, problem, peak)


def judge(case: Case, code: int | None, output: str, last: str, seconds: float) -> str | None:
    bound = SUBPROCESS_SECONDS if case.subprocess else IN_PROCESS_SECONDS
    if code is None and "Traceback" not in output:
        return f"no answer within {bound:g} s (a hang?)"
    if "Traceback" in output:
        return f"a traceback: {last[:200]!r}"
    if code != 2:
        return f"exit code {code}, expected 2; last line {last[:200]!r}"
    if not ERROR_LINE.match(last):
        return f"the last line of stderr is not one error line: {last[:200]!r}"
    if case.names.lower() not in last.lower():
        return f"the error does not name {case.names!r}: {last[:200]!r}"
    return None


@dataclass
class BatteryResult:
    outcomes: list[Outcome]
    uncovered: list[str]
    seconds: dict[str, float]  # fixtures, in-process cases, all cases (the subprocesses run beside the others)
    peak_rss_kib: dict[str, int]  # this process (the in-process cases and the fixtures), and the largest child

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.problem]


def battery(tmp: Path) -> BatteryResult:
    """Build the fixtures in `tmp`, run every case (subprocesses two at a time, beside the in-process ones)."""
    t0 = time.perf_counter()
    todo = cases(build_fixtures(tmp))
    return run_all(todo, time.perf_counter() - t0, uncovered(todo))


def run_all(todo: list[Case], fixture_seconds: float, missed: list[str]) -> BatteryResult:
    """Every case: the subprocesses two at a time, beside the in-process ones."""
    t1 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        spawned = [pool.submit(run_case, c) for c in todo if c.subprocess]
        here = [run_case(c) for c in todo if not c.subprocess]
        t2 = time.perf_counter()
        outcomes = here + [f.result() for f in spawned]
    t3 = time.perf_counter()
    rss = {"this process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           "largest child": max(o.peak_kib for o in outcomes)}
    return BatteryResult(outcomes, missed, {"fixtures": fixture_seconds, "in-process cases": t2 - t1,
                                            "all cases": t3 - t1}, rss)


def report(result: BatteryResult) -> str:
    rows = Counter(o.case.command for o in result.outcomes)
    lines = ["| subcommand | cases | flags | files | folders | in subprocesses | slowest s | failures |",
             "|---|---|---|---|---|---|---|---|"]
    for command in rows:
        mine = [o for o in result.outcomes if o.case.command == command]
        kinds = Counter(o.case.kind for o in mine)
        lines.append(f"| {command} | {len(mine)} | {kinds['flag']} | {kinds['file']} | {kinds['folder']} | "
                     f"{sum(o.case.subprocess for o in mine)} | {max(o.seconds for o in mine):.2f} | "
                     f"{sum(1 for o in mine if o.problem)} |")
    mib = {k: f"{v / 1024:.0f} MiB" for k, v in result.peak_rss_kib.items()}
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    lines += ["", f"{len(result.outcomes)} cases, {len(result.failures)} failures ({seconds}); peak RSS "
                  f"{mib['largest child']} (largest child), {mib['this process']} (this process); flags no case gives: "
                  f"{', '.join(result.uncovered) or 'none'}", "", "slowest:"]
    lines += [f"- {o.seconds:.1f} s {o.case.command} {o.case.kind}{' (subprocess)' if o.case.subprocess else ''}: "
              f"{shown(o.case.argv)}" for o in sorted(result.outcomes, key=lambda o: -o.seconds)[:5]]
    lines += [f"- FAILED {o.case.command} {o.case.kind} {shown(o.case.argv)}: {o.problem}" for o in result.failures]
    return "\n".join(lines)


def shown(argv: tuple[str, ...]) -> str:
    """A case's command line, each argument quoted and cut short (the fixtures' temp folder left out)."""
    return " ".join(quote(re.sub(r"/\S*?prezoo-hostile-cli-[^/]+/", "", a), 50) for a in argv)


def run_battery_command(module: str, doc: str | None, run, argv: list[str] | None) -> None:
    """`python -m bench.MODULE`: `run` (a battery) in a fresh temp folder, its report printed."""
    p = argparse.ArgumentParser(prog=f"python -m bench.{module}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix=f"prezoo-hostile-cli-{module}-") as tmp:
        result = run(Path(tmp))
        os.chdir(ROOT)
    print(report(result))


def main(argv: list[str] | None = None) -> None:
    run_battery_command("bench_hostile_cli", __doc__, battery, argv)


if __name__ == "__main__":
    main()
