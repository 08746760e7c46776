"""Up-front checks of the paths a command will write to, and of names that become folders.

Every command that writes (``train --storage``, ``search --storage``, ``eval --out``,
``leaderboard export|plot --out``, ``data stats|synth --out`` ...) checks its output here before
it starts Ray, reads data or evaluates, so that a path that cannot be a folder is one line
(exit 2) instead of a traceback after minutes of work. Nothing is created by the checks.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from irstdlab.harness.errors import UserError

# a name becomes one folder (and a leaderboard partition ``search=<name>``): keep it portable
NAME_PUNCTUATION = frozenset("._-+=@,")
MAX_NAME_BYTES = 200  # file systems allow 255; leave room for suffixes Ray and we append


def _lstat(path: Path, field: str, target: Path) -> os.stat_result | None:
    """``os.lstat`` or None when nothing is there; a path that cannot be looked up is an error."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None  # the caller finds the file among the ancestors
    except OSError as exc:
        reason = {errno.ENAMETOOLONG: "a name in it is too long", errno.ELOOP: f"{path} is a symlink loop",
                  errno.EACCES: f"no permission to look into {path.parent}"}.get(exc.errno or 0, exc.strerror)
        raise UserError(f"{field} {target}: cannot be used ({reason})") from None


def _as_path(path: str | os.PathLike[str], field: str) -> Path:
    text = os.fspath(path)
    if not str(text).strip():
        raise UserError(f"{field}: must not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in str(text)):  # NUL, newline ...: never meant
        raise UserError(f"{field} {text!r}: contains a control character")
    return Path(text)


def ensure_writable_dir(path: str | os.PathLike[str], field: str) -> Path:
    """``path`` is a folder we can write into, or one we can create; else one-line UserError.

    ``field`` names the option (``--storage``, ``--out``) in the message. Returns the path.
    """
    target = _as_path(path, field)
    _check_folder(target, field, target)
    return target


def ensure_writable_file(path: str | os.PathLike[str], field: str) -> Path:
    """``path`` can be written as a file: not a folder, and its parent is or can be a folder."""
    target = _as_path(path, field)
    info = _lstat(target, field, target)
    if (info is not None and stat.S_ISDIR(info.st_mode)) or target.name in ("", ".", ".."):
        raise UserError(f"{field} {target}: is a folder; give a file name")
    _check_folder(target.parent, field, target)
    if info is not None and not os.access(target, os.W_OK):
        raise UserError(f"{field} {target}: file is not writable")
    return target


def _check_folder(folder: Path, field: str, target: Path) -> None:
    """``folder`` exists as a writable folder, or its nearest existing ancestor is one."""
    probe = folder
    while (info := _lstat(probe, field, target)) is None:
        if probe.parent == probe:  # nothing exists up to the root: only a broken mount does this
            raise UserError(f"{field} {target}: no existing parent folder")
        probe = probe.parent
    if stat.S_ISLNK(info.st_mode):
        try:
            info = os.stat(probe.resolve(strict=True))
        except (OSError, RuntimeError):
            raise UserError(f"{field} {target}: {probe} is a broken symlink or a symlink loop") from None
    if not stat.S_ISDIR(info.st_mode):
        if probe == target:
            raise UserError(f"{field} {target}: is a file, not a folder")
        raise UserError(f"{field} {target}: cannot be created, {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{field} {target}: folder {probe} is not writable")


def validate_name(name: str, field: str = "--name") -> str:
    """A run or search name: one plain folder name, never a path.

    Refused: empty, ``.``/``..`` or a leading dot, separators, control characters, anything but
    letters, digits and ``._-+=@,``, and names longer than ``MAX_NAME_BYTES``.
    """
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{field}: must not be empty")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise UserError(f"{field} {name!r}: must be a plain name without / \\ or .. "
                        "(it becomes a file or folder name)")
    if name.startswith("."):
        raise UserError(f"{field} {name!r}: must not start with '.'")
    bad = next((c for c in name if not (c.isalnum() or c in NAME_PUNCTUATION)), None)
    if bad is not None:
        raise UserError(f"{field} {name!r}: character {bad!r} is not allowed "
                        "(use letters, digits and . _ - + = @ ,)")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise UserError(f"{field}: longer than {MAX_NAME_BYTES} bytes")
    return name


def safe_label(text: str) -> str:
    """``text`` with every character a name may not hold replaced by ``_`` (for default names)."""
    label = "".join(c if c.isalnum() or c in NAME_PUNCTUATION else "_" for c in text).lstrip(".")
    return label[:80] or "run"


__all__ = ["ensure_writable_dir", "ensure_writable_file", "safe_label", "validate_name"]
