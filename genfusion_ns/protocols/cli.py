"""``genfusion-mask-dataset``: write the masked-input variant of a nerfstudio dataset folder."""

from __future__ import annotations

import tyro
from rich.console import Console

from genfusion_ns.outputs import exit_with_error

from .masked import COMMAND, MaskedProtocolConfig, MaskedProtocolError, make_masked_dataset

CONSOLE = Console()


def entrypoint() -> None:
    config = tyro.cli(MaskedProtocolConfig, description=MaskedProtocolConfig.__doc__)
    try:
        summary = make_masked_dataset(config)
    except MaskedProtocolError as error:
        exit_with_error(COMMAND, error)
    CONSOLE.print(f"Wrote {summary.output}: {len(summary.train_files)} masked training frames, "
                  f"{len(summary.eval_files)} full-frame evaluation frames ({config.placement} patch).")


if __name__ == "__main__":
    entrypoint()
