"""`sv3d-trt view DIR`: refresh DIR/index.html and open it in the default browser when there is
a display to open it on (on a headless machine the caller prints the path instead)."""
from __future__ import annotations

import os
import sys
import webbrowser
from pathlib import Path

from ..errors import ViewerError
from .page import PAGE_NAME, write_page


def has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def view(result_dir) -> tuple[Path, bool]:
    """Rewrite the page from what the folder holds now; returns (page, opened in a browser)."""
    page = write_page(result_dir)
    if page is None:
        raise ViewerError(f"{Path(result_dir) / PAGE_NAME} was not written by sv3d-trt; not replacing it")
    opened = has_display() and webbrowser.open(page.resolve().as_uri())
    return page, opened
