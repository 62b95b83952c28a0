"""Offline HTML pages: index.html for every output folder (orbit, cameras, mesh, run facts) and
the benchmark report. Pages open from file:// with no network; the server serves the same
`render_page` string per job."""
from .launch import view
from .page import PAGE_NAME, find_mesh, render_page, save_page, write_page

__all__ = ["PAGE_NAME", "find_mesh", "render_page", "save_page", "view", "write_page"]
