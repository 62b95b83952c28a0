"""`sv3d-trt` command line. Each command parses options, builds one config and calls one
public function; library errors (SV3DError) become one red line and exit code 1."""
from __future__ import annotations

import functools
import sys

import click

from .errors import SV3DError


def _friendly(fn):
    """Turn the package's typed errors into one clear line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SV3DError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sv3d-trt")
def main():
    """sv3d-trt: fast, faithful SV3D inference (image -> 21-view orbit -> textured mesh)."""


# ---- foundation: checkpoints, generate, demo --------------------------------------------


# ---- export / build / verify -------------------------------------------------------------


# ---- runtime ------------------------------------------------------------------------------


# ---- mesh ---------------------------------------------------------------------------------


# ---- bench --------------------------------------------------------------------------------


if __name__ == "__main__":
    main()
