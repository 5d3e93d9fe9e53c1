"""Which device a command runs on: ``auto`` means CUDA when a GPU is visible, else the CPU."""

from __future__ import annotations

import torch

from genfusion_ns.errors import UserError


class DeviceUnavailable(UserError):
    """``cuda`` was asked for on a machine where no GPU is visible."""


def default_device_type() -> str:
    """``cuda`` when a GPU is visible, else ``cpu`` (nerfstudio 1.1.5 defaults to cuda unconditionally)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str, flag: str = "--device") -> str:
    """``auto`` -> the default device; ``cuda`` only where a GPU is visible (a clear error otherwise)."""
    if device == "auto":
        return default_device_type()
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(f"{flag} cuda was asked for but no CUDA device is visible; use {flag} cpu or auto.")
    return device
