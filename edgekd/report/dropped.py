"""Files the export did not keep (below their parity threshold, or a converter failure): listed in the
report beside the ones kept, so a reader sees that, say, post-training pal4 missed where its
compression-aware twin passed."""

from __future__ import annotations

HEADERS = ("student", "format/mode", "agreement", "required", "why not kept")
INTRO = "Below their parity threshold against PyTorch (or failed to convert): not benchmarked, never shipped."


def dropped_rows(failures: list[dict]) -> list[list[str]]:
    """`failures`: artifacts.json's `failures` entries, each with the student's name added as `model`."""
    def num(v, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    return [[f["model"], f"{f['format']}/{f['quant']}", num(f.get("top1_agreement"), ".4f"),
             num(f.get("required"), "g"), str(f.get("reason") or "").split("\n")[0]] for f in failures]
