"""``genfusion-mask-dataset``: write the masked-input variant of a nerfstudio dataset folder."""

from __future__ import annotations

import sys

import tyro
from rich.console import Console

from .masked import MaskedProtocolConfig, MaskedProtocolError, make_masked_dataset

CONSOLE = Console()


def entrypoint() -> None:
    config = tyro.cli(MaskedProtocolConfig, description=MaskedProtocolConfig.__doc__)
    try:
        summary = make_masked_dataset(config)
    except MaskedProtocolError as error:
        CONSOLE.print(f"[bold red]genfusion-mask-dataset: error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    CONSOLE.print(f"Wrote {summary.output}: {len(summary.train_files)} masked training frames, "
                  f"{len(summary.eval_files)} full-frame evaluation frames ({config.placement} patch).")


if __name__ == "__main__":
    entrypoint()
