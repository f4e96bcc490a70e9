"""``python -m cloud_server``: the same flags as ``pdd serve``."""

import typer

from .cli import serve

if __name__ == "__main__":
    typer.run(serve)
