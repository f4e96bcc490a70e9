"""The SDK's public surface: two names from the package, and importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys


def test_two_public_names_and_a_cheap_import():
    code = (
        "import sys, device_client\n"
        "assert 'torch' not in sys.modules, 'importing the package loaded torch'\n"
        "from device_client import DeviceClient, SamplingParams\n"
        "from device_client.client import DeviceClient as C\n"
        "from common.messages import SamplingParams as S\n"
        "assert DeviceClient is C and SamplingParams is S\n"
        "assert sorted(device_client.__all__) == ['DeviceClient', 'SamplingParams']\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
