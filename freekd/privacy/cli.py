"""``freekd privacy pate`` and ``freekd privacy dpsgd``: the accounting calculators."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from freekd.cli_options import JsonOption, _floats, user_errors
from freekd.cli_tables import print_privacy

privacy_app = typer.Typer(no_args_is_help=True, help="Privacy accounting calculators.")


@privacy_app.command("pate")
@user_errors
def privacy_pate(
    votes: Annotated[
        Path,
        typer.Option("--votes", help="votes.npy: (N queries × K classes) integer vote counts."),
    ],
    sigma2: Annotated[float, typer.Option("--sigma2", help="GNMax noise σ₂ of the answers.")],
    delta: Annotated[float, typer.Option("--delta", help="δ of the (ε, δ) figures.")],
    sigma1: Annotated[
        float | None,
        typer.Option("--sigma1", help="Confident-GNMax: noise σ₁ of the threshold check."),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Confident-GNMax: threshold T.")
    ] = None,
    answered: Annotated[
        Path | None,
        typer.Option(
            "--answered", help="mask.npy: N booleans, the queries answered (default: all)."
        ),
    ] = None,
    orders: Annotated[
        str | None, typer.Option("--orders", help="Rényi orders, comma-separated, e.g. 2,4,8.")
    ] = None,
    sanitize: Annotated[
        bool,
        typer.Option(
            "--sanitize",
            help="Also release the data-dependent ε through smooth sensitivity (PATE 2018 §B), "
            "as `sanitized`.",
        ),
    ] = False,
    ss_sigma: Annotated[
        float | None,
        typer.Option("--ss-sigma", help="With --sanitize: noise multiplier σ_s (default 10)."),
    ] = None,
    ss_beta: Annotated[
        float | None,
        typer.Option("--ss-beta", help="With --sanitize: smoothness β (default 1/(4·order))."),
    ] = None,
    ss_order: Annotated[
        float | None,
        typer.Option(
            "--ss-order", help="With --sanitize: Rényi order (default: best data-dependent)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="With --sanitize: noise seed.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Privacy cost of answering queries by GNMax or Confident-GNMax, from the teachers' votes.

    Prints the data-dependent ε (PATE 2018, Thm 6 and Prop 7; not private to publish without
    smooth sensitivity) beside the data-independent ε (publishable); with --sanitize, also the
    smooth-sensitivity release of the data-dependent ε (publishable).
    """
    from freekd.privacy.pipeline import run_privacy_pate

    result = run_privacy_pate(
        votes,
        sigma=sigma2,
        delta=delta,
        sigma_threshold=sigma1,
        threshold=threshold,
        answered_path=answered,
        orders=_floats(orders, "--orders"),
        sanitize={"noise": ss_sigma, "beta": ss_beta, "order": ss_order, "seed": seed}
        if sanitize
        else None,
    )
    print_privacy("PATE privacy", result, as_json)


@privacy_app.command("dpsgd")
@user_errors
def privacy_dpsgd(
    sample_rate: Annotated[
        float, typer.Option("--sample-rate", help="Poisson sampling rate q per step.")
    ],
    noise_multiplier: Annotated[
        float, typer.Option("--noise-multiplier", help="Opacus' noise multiplier σ/C.")
    ],
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps.")],
    delta: Annotated[float, typer.Option("--delta", help="δ of the (ε, δ) figure.")],
    as_json: JsonOption = False,
) -> None:
    """(ε, δ) of a DP-SGD run, by Opacus' RDP analysis of the sampled Gaussian mechanism."""
    from freekd.privacy.pipeline import run_privacy_dpsgd

    result = run_privacy_dpsgd(
        sample_rate=sample_rate, noise_multiplier=noise_multiplier, steps=steps, delta=delta
    )
    print_privacy("DP-SGD privacy", result, as_json)
