"""``python3 -m service``: run Delight from a fresh checkout with nothing but Python 3.11+.

    python3 -m service serve     # the demo rules on embedded PostgreSQL and Redis
    python3 -m service test      # the whole test suite
    python3 -m service ARGS...   # any other ``delight`` command

It creates ``.venv`` next to this package the first time, installs the pinned
dependencies from the lock files (verified by hash), and hands over to that
environment. Later runs reuse it, reinstalling only when a lock file changes.
Standard library only: this runs before any dependency is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
STAMP = VENV / ".delight-installed"


def _python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _digest(lock: Path) -> str:
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def _installed() -> set[str]:
    return set(STAMP.read_text().split()) if STAMP.exists() else set()


def _ensure(locks: list[Path]) -> None:
    """Make ``.venv`` hold one of ``locks`` (the first is installed when none is)."""
    if any(_digest(lock) in _installed() for lock in locks):
        return
    lock = locks[0]
    if not _python().exists():
        print(f"delight: creating {VENV} ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(f"delight: installing pinned dependencies from {lock.name} (first run only) ...", file=sys.stderr)
    pip = [str(_python()), "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
    subprocess.run([*pip, "--require-hashes", "-r", str(lock)], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    STAMP.write_text(" ".join(sorted({*_installed(), _digest(lock)})))


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs on whatever python3 the user has
        print("delight: Python 3.11 or newer is needed", file=sys.stderr)
        return 2
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    try:
        if argv[0] == "test":
            _ensure([DEV_LOCK])
            command = [str(_python()), "-m", "pytest", *argv[1:]]
        else:
            _ensure([RUNTIME_LOCK, DEV_LOCK])
            command = [str(_python()), "-m", "service.cli", *argv]
    except subprocess.CalledProcessError as exc:
        print(f"delight: installing dependencies failed ({exc})", file=sys.stderr)
        return 1
    os.chdir(ROOT)
    if os.name == "nt":  # pragma: no cover - no exec on Windows
        return subprocess.call(command)
    os.execv(command[0], command)
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
