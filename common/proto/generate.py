"""Regenerate ``pd_pb2.py`` / ``pd_pb2_grpc.py`` from ``pd.proto`` (needs grpcio-tools).

Usage: ``python -m common.proto.generate [OUT_DIR]``. A test checks the committed files are current.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent


def generate(out_dir: Path = HERE) -> None:
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{HERE}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(HERE / "pd.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    grpc_file = out_dir / "pd_pb2_grpc.py"
    # protoc writes a top-level import; make it package-relative.
    grpc_file.write_text(
        grpc_file.read_text().replace("import pd_pb2 as", "from . import pd_pb2 as")
    )


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
