"""``python -m cloud_server.gateway_main``: the same flags as ``pdd gateway``."""

import typer

from .cli import gateway

if __name__ == "__main__":
    typer.run(gateway)
