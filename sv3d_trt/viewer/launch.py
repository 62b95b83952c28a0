"""`sv3d-trt view DIR`: refresh DIR/index.html and open it in the default browser when there is
a display to open it on (on a headless machine the caller prints the path instead)."""
from __future__ import annotations

import os
import sys
import webbrowser
from pathlib import Path

from .page import save_page


def has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def view(result_dir) -> tuple[Path, bool]:
    """Rewrite the page from what the folder holds now; returns (page, opened in a browser)."""
    page = save_page(result_dir)
    opened = has_display() and webbrowser.open(page.resolve().as_uri())
    return page, opened
