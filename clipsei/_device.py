"""Which torch device to run on: the one helper ``embed`` and ``head`` share."""

from __future__ import annotations

import torch


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise a validated ``torch.device``.

    Raises ``ValueError`` for a name torch does not know, or for a device (CUDA, MPS, ...)
    this machine's torch cannot use.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]'; got {device!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for but CUDA is not available")
    if device.type not in ("cpu", "cuda", "meta"):  # mps, xpu, ...: can this torch use it?
        try:
            torch.empty(1, device=device)
        except (RuntimeError, AssertionError, NotImplementedError, ImportError):
            raise ValueError(f"device {device} was asked for but this machine's torch cannot "
                             "use it; use 'auto', 'cpu' or 'cuda[:i]'") from None
    return device
