"""``nnletters gradcheck``: is backprop right for this config? Prints one line per tensor."""

from __future__ import annotations

import json
import sys

import click

from nnletters.cli import handle_errors


@click.command("gradcheck")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="YAML experiment config whose model and data to check.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key (value parsed as YAML); repeatable.")
@click.option("--samples", default=8, show_default=True, type=click.IntRange(min=1),
              help="Training samples the checked loss averages over.")
@click.option("--entries", default=64, show_default=True, type=click.IntRange(min=1),
              help="Entries checked per parameter tensor (a seeded random subset when larger).")
@click.option("--threshold", default=1e-4, show_default=True,
              type=click.FloatRange(min=0.0, min_open=True),
              help="Largest max relative error a tensor may show and pass.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per tensor.")
@handle_errors
def gradcheck(config_path: str, overrides: tuple[str, ...], samples: int, entries: int,
              threshold: float, as_json: bool) -> None:
    """Compare backprop's gradient of every parameter tensor with central finite
    differences in float64, on a few real training samples. Exits 1 if any tensor fails."""
    from nnletters.config import load_config
    from nnletters.gradcheck_run import format_report, gradient_check, report_rows

    for item in overrides:
        if "=" not in item or not item.partition("=")[0].strip():
            raise click.UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=0.01")
    cfg = load_config(config_path, overrides)
    report = gradient_check(cfg, samples, entries, threshold,
                            progress=not as_json and sys.stderr.isatty())
    click.echo(json.dumps(report_rows(report)) if as_json else format_report(report))
    if report.failed:
        raise click.ClickException(
            f"gradient check failed for {', '.join(report.failed)}: max relative error "
            f"above {threshold:g}, so backprop disagrees with the finite differences")
