"""The documentation's commands and links stay true to the code.

Every ``python train.py …`` and ``upconv …`` command in a command block (```bash, ```sh, ```console) of the
README and docs/, and every such command written as inline code in their text, is parsed by the real parser:
LightningCLI's for ``train.py`` (config file included: a ``--model.init_args.X`` must be an argument of the
config's model class) and the ``upconv`` console script's for the rest. Nothing is run or built, so a
command that names an option that does not exist, or gives a value of the wrong type, fails here in
seconds. The README's CPU path must hold all five steps. Every relative link must reach a file, and its
anchor a heading there.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import shlex
import sys
from pathlib import Path
from unittest import mock

import pytest
from jsonargparse import capture_parser

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CPU_PATH = "A 15-minute CPU path through CIFAR-10"
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)


# ---------------------------------------------------------------- reading commands out of markdown


def command_blocks(markdown: str) -> list[str]:
    """The bodies of the shell command blocks; a console block keeps only its ``$ `` lines."""
    blocks = []
    for lang, body in FENCE.findall(markdown):
        if lang in SHELL_BLOCKS:
            if lang == "console":
                body = "\n".join(line[2:] for line in body.splitlines() if line.startswith("$ "))
            blocks.append(body)
    return blocks


def commands(shell: str) -> list[list[str]]:
    """``python train.py …`` and ``upconv …`` commands of a shell text, as argument lists after the program
    (``["fit", "--config", …]``). Continued lines are joined, comments dropped, ``&&`` / ``;`` / ``|`` split."""
    found = []
    for line in shell.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        part: list[str] = []
        for tok in [*tokens, ";"]:
            if tok not in ("&&", ";", "|", "||"):
                part.append(tok)
                continue
            while part and re.match(r"^[A-Z_][A-Z0-9_]*=", part[0]):  # VAR=value before the program
                part.pop(0)
            if part[:2] == ["python", "train.py"]:
                found.append(["train.py", *part[2:]])
            elif part[:1] == ["upconv"] or part[:3] == ["python", "-m", "upconv.cli.main"]:
                found.append(["upconv", *part[1 if part[0] == "upconv" else 3 :]])
            part = []
    return found


def inline_commands(markdown: str) -> list[list[str]]:
    """Commands written as inline code in the first column of a table (the tables of commands and of
    ``upconv visualize`` examples); inline code elsewhere often names a command without its arguments."""
    rows = [ln for ln in FENCE.sub("", markdown).splitlines() if ln.lstrip().startswith("|")]
    first_cells = [re.split(r"(?<!\\)\|", row)[1] for row in rows]
    spans = re.findall(r"`(upconv [^`]+|python train\.py [^`]+)`", "\n".join(first_cells))
    return [c for span in spans for c in commands(span)]


def section(markdown: str, title: str) -> str:
    """The text under the heading ``title`` up to the next heading of the same or a higher level."""
    m = re.search(rf"^(#+) {re.escape(title)}\s*$", markdown, re.M)
    assert m, f"no section '{title}'"
    end = re.compile(rf"^#{{1,{len(m.group(1))}}} ", re.M).search(markdown, m.end())
    return markdown[m.end() : end.start() if end else len(markdown)]


def is_template(argv: list[str]) -> bool:
    """A placeholder (``<layer>``, ``…``, ``$VAR``) or a help request: shown to be read, not run."""
    return any(re.search(r"[<>…$]", a) for a in argv) or "--help" in argv or "-h" in argv


# ---------------------------------------------------------------- the real parsers


@functools.cache
def parser(program: str):  # a jsonargparse ArgumentParser
    """The parser the program would build, captured before it parses anything (nothing runs)."""
    from upconv.cli.main import main as upconv_main
    from upconv.training.cli import main as train_main

    main = train_main if program == "train.py" else upconv_main
    with mock.patch.object(sys, "argv", [program]):  # LightningCLI warns when sys.argv holds pytest's
        return capture_parser(lambda: main([]))


def parse_error(argv: list[str]) -> str | None:
    """None when the program's parser accepts ``argv[1:]``; else its error message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = argv[1:]
            if argv[0] == "upconv":  # the console script spells out its encoder shortcuts first, as main does
                from upconv.cli.args import encoder_options
                from upconv.cli.main import COMMANDS

                args = encoder_options(args, COMMANDS)
            parser(argv[0]).parse_args(args)
    except SystemExit as e:
        if e.code not in (0, None):
            message = err.getvalue()
            return message[message.find("error:") :].strip() or f"exit status {e.code}"
    except argparse.ArgumentError as e:  # train.py's parser raises its errors (turned into one line by main)
        return str(e)
    return None


def check(cmds: list[list[str]], where: str) -> None:
    """Every command parses; otherwise one message naming each that does not, and why."""
    errors = [f"  {shlex.join(argv)}\n    {e}" for argv in cmds if (e := parse_error(argv)) is not None]
    assert not errors, f"{where}: commands that do not parse:\n" + "\n".join(errors)


# ---------------------------------------------------------------- (a) commands


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # configs and data paths in the commands are relative to the repository


def test_the_readme_cpu_path_has_every_step_and_each_command_parses():
    blocks = command_blocks(section((REPO / "README.md").read_text(), CPU_PATH))
    cmds = [c for b in blocks for c in commands(b)]
    steps = [c[0] if c[0] == "train.py" else f"upconv {c[1]}" for c in cmds]
    # encoder, decoders, evaluation, DeconvNet, privacy
    assert steps == ["train.py", "train.py", "upconv evaluate", "upconv deconv", "upconv privacy"], steps
    configs = [c[c.index("--config") + 1] for c in cmds if "--config" in c]
    assert configs[:2] == ["configs/cifar10_alexnet_encoder.yaml", "configs/cifar10_alexnet_all.yaml"]
    assert not [argv for argv in cmds if is_template(argv)]
    check(cmds, f"README, {CPU_PATH}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_documented_command_parses(page):
    text = page.read_text()
    cmds = [c for b in command_blocks(text) for c in commands(b)] + inline_commands(text)
    check([argv for argv in cmds if not is_template(argv)], str(page.relative_to(REPO)))


def test_a_nonexistent_option_or_subcommand_is_caught():
    cpu_path = section((REPO / "README.md").read_text(), CPU_PATH)
    train, *_ = [c for b in command_blocks(cpu_path) for c in commands(b)]
    assert parse_error(train) is None
    assert "limit_trian" in parse_error([*train, "--data.images.limit_trian", "5"])
    assert "bogus" in parse_error([*train, "--model.init_args.bogus", "5"])
    assert parse_error(["upconv", "evaluate", "--limit", "5"]) is None
    assert "bogus" in parse_error(["upconv", "evaluate", "--limit", "5", "--bogus", "1"])
    assert parse_error(["upconv", "evaluat", "--limit", "5"])
    assert parse_error(["upconv", "privacy", "--n_eval", "many"])  # a value of the wrong type


def test_commands_are_read_out_of_markdown():
    text = (
        "x\n```bash\nsource .venv/bin/activate   # not ours\nUPCONV_PROGRESS=0 upconv layers alexnet_cifar  # c\n"
        "python train.py fit --config a.yaml \\\n    --trainer.max_epochs 1 && upconv evaluate --limit 2\n```\n"
        "```python\nupconv = 1\n```\n```console\n$ upconv deconv e l d\noutput line\n```\n"
        "| `upconv visualize class alexnet_cifar [0,3] --starts 2` \\| `upconv layers` | ok |\n"
        "| `upconv deconv <e> <l> <d>` | `upconv deconv` in another column |\n"
        "text naming `upconv deconv --channels` without its arguments\n"
    )
    cmds = [c for b in command_blocks(text) for c in commands(b)]
    assert cmds == [
        ["upconv", "layers", "alexnet_cifar"],
        ["train.py", "fit", "--config", "a.yaml", "--trainer.max_epochs", "1"],
        ["upconv", "evaluate", "--limit", "2"],
        ["upconv", "deconv", "e", "l", "d"],
    ]
    inline = inline_commands(text)
    assert inline == [
        ["upconv", "visualize", "class", "alexnet_cifar", "[0,3]", "--starts", "2"],
        ["upconv", "layers"],
        ["upconv", "deconv", "<e>", "<l>", "<d>"],
    ]
    assert [is_template(c) for c in inline] == [False, False, True]


# ---------------------------------------------------------------- (b) links


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets -1, -2, … as on GitHub."""
    found, count = set(), {}
    for heading in re.findall(r"^#+ (.+?)\s*$", FENCE.sub("", page.read_text()), re.M):
        s = slug(heading)
        found.add(s if s not in count else f"{s}-{count[s]}")
        count[s] = count.get(s, 0) + 1
    return found


def links(page: Path) -> list[str]:
    """Link targets of a page outside code (fenced blocks and inline spans)."""
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))
    return re.findall(r"!?\[[^]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_heading(page):
    broken = []
    for target in dict.fromkeys(links(page)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_docs_has_one_page_per_area_and_the_readme_links_each():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 15_500, "the README is a front page: move detail to a page under docs/"
    for name in [
        "encoders",
        "training",
        "evaluation",
        "deconvnet",
        "privacy",
        "visualisations",
        "design",
        "measurements",
    ]:
        assert (REPO / "docs" / f"{name}.md").exists(), name
        assert f"(docs/{name}.md" in readme, f"README links no docs/{name}.md"


def test_a_broken_link_or_anchor_is_caught(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "# Top\n## Training health at 10× the rate (CPU)\n[a](#training-health-at-10-the-rate-cpu) "
        "[b](#no-such) [c](missing.md) `[d](in-code.md)`\n```bash\n[e](block.md)\n```\n"
    )
    assert links(page) == ["#training-health-at-10-the-rate-cpu", "#no-such", "missing.md"]
    assert anchors(page) == {"top", "training-health-at-10-the-rate-cpu"}
