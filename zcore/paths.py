"""Where the distribution's data directories (``flows/``, ``config/``) are.

In a checkout (and an editable install) they sit beside the ``zcore`` package; a wheel carries
them inside it as ``zcore/_data``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["data_path"]

_PACKAGE = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    """The directory ``name`` (``"flows"`` or ``"config"``) of this distribution."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the distribution's {name}/ directory is missing "
                            f"(looked in {_PACKAGE / '_data'} and {_PACKAGE.parent})")
