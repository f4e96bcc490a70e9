"""Online correction: the client learns the device's own decode time and paces to it."""

from __future__ import annotations

from dataclasses import replace

from device_helpers import SHORT_PROMPT
from support import fast_pacing

from device_client.client import DeviceClient


def test_client_learns_its_decode_time_and_paces_to_it(loaded_model):
    with DeviceClient(
        None, model=loaded_model, settings=fast_pacing(), device_slowdown=2.0
    ) as client:
        _, _, before = client.build_request(SHORT_PROMPT, mode="pd", max_tokens=8)
        assert client.decode_s_estimate is None and before.decode_interval_s == 0.0
        client.generate(SHORT_PROMPT, max_tokens=8, mode="device")
        tau_d = client.decode_s_estimate
        assert tau_d is not None and tau_d > 0
        client.config = replace(client.config, cloud_url="http://127.0.0.1:1")  # pd needs a URL
        _, mode, after = client.build_request(SHORT_PROMPT, mode="pd", max_tokens=8)
        assert mode.value == "pd"
        assert after.decode_interval_s == tau_d
        # Δmin follows the device's rhythm, within the bucket's Δmax.
        assert after.min_interval_s == min(tau_d, after.max_interval_s)
