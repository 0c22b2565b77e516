"""Errors a user can act on. The CLI prints their message on one line and exits with `exit_code`."""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_GATE_FAILED = 4


class VlqError(Exception):
    """Base class: a problem with what the user asked for, not a bug in vlq."""

    exit_code = EXIT_INPUT


class UsageError(VlqError):
    """Options that contradict each other or name something unsupported."""

    exit_code = EXIT_USAGE


class InputError(VlqError):
    """A model folder, data file or work dir that cannot be used as given."""

    exit_code = EXIT_INPUT


class GateFailed(VlqError):
    """An accuracy gate (`--max-drop`) was exceeded: the artifact must not ship."""

    exit_code = EXIT_GATE_FAILED


def require_packages(packages: tuple[str, ...], extra: str, purpose: str) -> None:
    """Refuse early, naming the pip extra, when optional packages that `purpose` needs are missing."""
    import importlib.util

    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"{purpose} needs {', '.join(missing)}: pip install 'vlq[{extra}]'")
