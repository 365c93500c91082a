"""Export's parity check: the stage-neutral helper in `edgekd.parity`, which `edgekd verify` uses too."""

from edgekd.parity import measure_parity, parity_failure  # noqa: F401
