"""edgekd: distill a compact student from a teacher, export it for phones, measure it, gate the release."""

__version__ = "0.1.0"
