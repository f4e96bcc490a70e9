"""Shared contracts of pd-device: wire messages, errors, settings, platform, model loading, sampling.

Imports nothing else of this project; ``cloud_server`` and ``device_client`` both build on it.
"""
