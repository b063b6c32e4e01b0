"""The containers every data source fills: a ``Dataset`` (one source's images and labels) and
``Splits`` (train / validation / test over the same classes)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from nnletters.data.images import gather_unit_float


@dataclass
class Dataset:
    """Everything one source holds, sorted by class then name.

    While a source is loaded, ``X`` may still hold its uint8 pixels (0..255, a quarter of the
    size): ``subset`` then converts only the rows it takes, so that splitting a large source
    never holds a float32 copy of all of it beside the float32 splits."""

    X: npt.NDArray[np.float32]        # (N, S*S) in [0, 1], C-contiguous (or uint8, see above)
    y: npt.NDArray[np.int64]          # (N,) indexes into classes
    classes: list[str]                # sorted class names, as found in the data
    paths: list[str]                  # (N,) name inside the source, e.g. "A/xyz.png"
    skipped: list[tuple[str, str]]    # (name, reason) of files that could not be read
    split: npt.NDArray[np.int8] | None = None  # (N,) 0 train, 1 val, 2 test, if defined
    fonts: list[str] = field(default_factory=list)  # synthetic letters: the fonts drawn from
    font_files: list[str] = field(default_factory=list)  # ... and their files (absolute paths)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: npt.NDArray[np.integer]) -> Dataset:
        """The samples at ``index`` (same classes, no split, nothing skipped); X float32."""
        X = (gather_unit_float(self.X, index) if self.X.dtype == np.uint8
             else np.ascontiguousarray(self.X[index]))
        return Dataset(X=X, y=self.y[index],
                       classes=list(self.classes), paths=[self.paths[i] for i in index],
                       skipped=[], split=None)


@dataclass
class Splits:
    """Train, validation and test sets over the same classes."""

    train: Dataset
    val: Dataset
    test: Dataset
    classes: list[str]
    skipped: list[tuple[str, str]]
    fonts: list[str] = field(default_factory=list)  # filled by the synthetic source
    font_files: list[str] = field(default_factory=list)  # the font files those came from
    source_digest: dict = field(default_factory=dict)  # the whole source's {"n", "sha256"}
    n_deduped: int = 0  # training images dropped as pixel-identical to a val/test image
