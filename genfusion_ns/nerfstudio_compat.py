"""Workarounds for nerfstudio 1.1.5 behaviour that breaks running several trainings in one process."""

from __future__ import annotations

import sys


def close_event_writers() -> None:
    """Close and forget nerfstudio's module-level event writers.

    ``train_loop`` registers tensorboard/local writers in global lists and never removes them, so a second in-process
    training (the demo, the benchmark, data generation, tests) keeps writing to the first run's event file -- and
    fails once that folder is moved or deleted.
    """
    writer = sys.modules.get("nerfstudio.utils.writer")
    if writer is None:  # nerfstudio's writers were never set up in this process
        return
    for event_writer in writer.EVENT_WRITERS:
        inner = getattr(event_writer, "tb_writer", None)
        if inner is not None:
            inner.close()
    writer.EVENT_WRITERS.clear()
    writer.EVENT_STORAGE.clear()
    writer.GLOBAL_BUFFER.clear()
