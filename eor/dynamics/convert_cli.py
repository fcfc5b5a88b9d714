"""`eor convert-model`: a dynamics model saved by the reference code, as an eor model directory."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("convert-model")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--elites",
    default=None,
    metavar="I,J,...",
    help="the elite members (num_elites distinct indices) instead of the ones the reference's "
    "loader picks; required when the pickle has no usable validation buffer",
)
def convert_model(src: Path, out: Path, elites: str | None) -> None:
    """Convert the reference code's saved dynamics model SRC into the eor model directory OUT.

    SRC is a folder written by the reference's train_dynamics_model.py (save_ensemble_model):
    weights.pt and data.pkl (its loader reads the same pickle as config.pkl; either name is
    accepted, config.pkl first). OUT must not exist or be empty; it gets meta.json with
    checksums, the weights and the provenance, and loads with eor.dynamics.load(OUT).

    The elites are the ones the reference's own loader picks: the num_elites members with the
    lowest mean squared error on the pickled validation buffer. `eor train-agent
    --load_model_dir SRC` also reads SRC directly, converting it at every start.

    Only plain data is unpickled (numpy arrays, containers, the reference's MeanStdevFilter and
    DataBuffer as attribute dicts); a pickle that names anything else is refused. See
    eor/dynamics/reference_format.py.

    \b
    Example:
      eor convert-model trained_dynamics/model_hopper-medium-v2_seed0_2024_05_01_12-00-00 models/hopper
      eor train-agent --env_name hopper-medium-v2 --load_model_dir models/hopper
    """
    from eor.dynamics.io import describe
    from eor.dynamics.reference_format import (
        ReferenceFormatError,
        convert_dir,
        is_reference_dir,
        parse_elites,
    )

    chosen = None
    if elites is not None:
        try:
            chosen = parse_elites(elites)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--elites") from None
    if not src.exists():
        raise click.BadParameter(f"{str(src)!r} does not exist", param_hint="SRC")
    if not is_reference_dir(src):
        raise click.BadParameter(
            f"{str(src)!r} is not a reference model directory (expected weights.pt and "
            "data.pkl or config.pkl, and no eor meta.json)",
            param_hint="SRC",
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise click.BadParameter(
            f"{str(out)!r} already exists and is not an empty directory", param_hint="OUT"
        )
    try:
        info = convert_dir(src, out, elites=chosen)
    except ReferenceFormatError as exc:
        raise click.BadParameter(str(exc), param_hint="SRC") from None
    except ValueError as exc:  # bad --elites for this model
        raise click.BadParameter(str(exc), param_hint="--elites") from None
    click.echo(
        f"converted {src} ({info['pickle']}): elites {info['elites']} ({info['elites_from']})"
    )
    click.echo(describe(out))
