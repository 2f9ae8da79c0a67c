"""Versioned prompt files: the one loader and section parser every prompt user shares.

Prompts (judge, injection, rewrite, review) are `.txt` files packaged under `mmalign/prompts/`
or given by path; their sha256 goes with every output made with them. A file may hold named
sections after the main text, each opened by a line `=== name ===`.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path


def read_prompt(name_or_path: str | os.PathLike, kind: str = "") -> tuple[str, str, str]:
    """(name, text, sha256) of a packaged prompt by name (`judge_v1`) or any .txt by path."""
    p = Path(name_or_path)
    if p.suffix == ".txt" and p.is_file():
        data, name = p.read_bytes(), p.stem
    else:
        folder = resources.files("mmalign").joinpath("prompts")
        res = folder.joinpath(f"{name_or_path}.txt")
        if not res.is_file():
            packaged = sorted(x.name[:-4] for x in folder.iterdir() if x.name.endswith(".txt"))
            label = f"{kind} prompt" if kind else "prompt"
            raise FileNotFoundError(f"no {label} {str(name_or_path)!r}: not a .txt file and "
                                    f"not a packaged prompt ({', '.join(packaged)})")
        data, name = res.read_bytes(), str(name_or_path)
    return name, data.decode("utf-8"), hashlib.sha256(data).hexdigest()


def prompt_sections(text: str) -> dict[str, str]:
    """The main text (key "main") and every `=== name ===` section, stripped of blank edges."""
    out: dict[str, str] = {}
    name, lines = "main", []
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("=== ") and stripped.endswith(" ===") and len(stripped) > 8:
            out[name] = "".join(lines).strip("\n")
            name, lines = stripped[4:-4].strip(), []
        else:
            lines.append(line)
    out[name] = "".join(lines).strip("\n")
    return out
