"""nnletters: multilayer perceptrons from scratch in NumPy that read letters in small images."""

__version__ = "0.1.0"
