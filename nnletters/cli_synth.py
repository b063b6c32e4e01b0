"""``nnletters data synth``: write rendered letters to disk as a dataset ``data.path`` reads."""

from __future__ import annotations

from pathlib import Path

import click

from nnletters.errors import NNLettersError


@click.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--letters", default="A-Z", show_default=True,
              help="Letters to render: a range 'A-J', a list 'ABC', or both 'A-E,X-Z'.")
@click.option("--size", type=click.IntRange(4, 256), default=28, show_default=True,
              help="Image width and height in pixels.")
@click.option("--per-class", type=click.IntRange(min=1), default=100, show_default=True,
              help="Images per letter.")
@click.option("--layout", type=click.Choice(["folders", "lists"]), default="folders",
              show_default=True,
              help="folders: OUT/A/A_00001.png ...; lists: OUT/images/ plus train.txt, "
                   "validate.txt, test.txt of 'path label' lines.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Same seed and same fonts give the same images.")
@click.option("--style", type=click.Choice(["notmnist", "seed"]), default="notmnist",
              show_default=True,
              help="notmnist: light letter filling a dark frame; seed: dark letter on white.")
def synth_command(out_dir: Path, letters: str, size: int, per_class: int, layout: str,
                  seed: int, style: str) -> None:
    """Render capital letters with this machine's fonts and write them to OUT_DIR."""
    from nnletters.data.synthetic import write_dataset

    try:
        summary = write_dataset(out_dir, letters, size, per_class, seed, layout=layout,
                                style=style, progress=True)
    except NNLettersError as exc:
        raise click.ClickException(str(exc)) from None
    splits = summary.get("splits")
    detail = (" (" + ", ".join(f"{name} {n}" for name, n in splits.items()) + ")"
              if splits else "")
    click.echo(f"wrote {summary['images']} images of {len(summary['letters'])} letters "
               f"({size}x{size}, {style} style, {len(summary['fonts'])} fonts) to {out_dir} "
               f"in the {layout} layout{detail}")
