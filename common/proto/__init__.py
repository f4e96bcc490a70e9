"""Generated gRPC code for ``pd.proto``. Regenerate with ``python -m common.proto.generate``."""
