"""Type-check the checkout's sources with mypy, under the names they install as.

The folders `harness/`, `models/`, ... install as `irstdlab.harness`, `irstdlab.models`, ... (see
`[tool.setuptools.package-dir]` in pyproject.toml), and `irstdlab` itself is an implicit namespace
package with no folder. mypy cannot express that mapping, so this script builds a small farm of
symlinks, `.mypy_cache/src/irstdlab/<package> -> <repo>/<folder>`, puts it first on mypy's search
path and checks `-p irstdlab.<package>` for every mapped package. The farm comes before
site-packages, so an installed (non-editable) copy of irstdlab is never what gets checked; paths in
mypy's report are rewritten back to the checkout's folders.

Usage: `python tools/typecheck.py [extra mypy arguments]`; exit status is mypy's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Inside mypy's cache folder (which mypy marks as git-ignored) and at a fixed place, so that
# mypy's incremental cache stays valid between runs.
FARM = REPO / ".mypy_cache" / "src"


def package_dirs(pyproject: Path) -> dict[str, str]:
    """`irstdlab.<package>` -> folder, as setuptools installs them."""
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    return dict(config["tool"]["setuptools"]["package-dir"])


def build_farm(mapping: dict[str, str]) -> None:
    for package, folder in mapping.items():
        link = FARM.joinpath(*package.split("."))
        link.parent.mkdir(parents=True, exist_ok=True)
        target = REPO / folder
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)


def to_checkout_paths(text: str, mapping: dict[str, str]) -> str:
    """Report `harness/cli.py`, not `.mypy_cache/src/irstdlab/harness/cli.py`."""
    for package, folder in mapping.items():
        linked = FARM.joinpath(*package.split("."))
        text = text.replace(f"{linked}{os.sep}", f"{folder}{os.sep}")
        text = text.replace(f"{linked.relative_to(REPO)}{os.sep}", f"{folder}{os.sep}")
    return text


def main(argv: list[str]) -> int:
    mapping = package_dirs(REPO / "pyproject.toml")
    build_farm(mapping)
    command = [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml")]
    for package in mapping:
        command += ["-p", package]
    env = dict(os.environ, MYPYPATH=str(FARM))
    done = subprocess.run(command + argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    sys.stdout.write(to_checkout_paths(done.stdout, mapping))
    sys.stderr.write(to_checkout_paths(done.stderr, mapping))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
