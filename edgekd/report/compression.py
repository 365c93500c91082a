"""The compression-aware students (edgekd.compress): one line each, with the bits it stores per layer,
so a reader sees what the mixed-precision choice was and what the fine-tuning kept."""

from __future__ import annotations

from edgekd.report import cells

INTRO = ("Fine-tuned on the file's grid with the KD loss (edgekd.compress); their files are in the matrices "
         "above.")
HEADERS = ("student", "from", "mode", "accuracy", "float student", "bits per weight", "sparsity",
           "bits per layer")


def compression_rows(results: list[dict]) -> list[list[str]]:
    """`results`: compress.json's rows. Bits per layer read `layer:bits` in network order, with the share
    of the layer's weights that are zero where the network is pruned (`layer:4@62%`)."""
    def layer(r: dict, name: str) -> str:
        zeros = r.get("layer_sparsity", {}).get(name)
        return f"{name}:{r['bits'][name]}" + (f"@{zeros:.0%}" if zeros is not None else "")

    return [[r["name"], r["student"], r["mode"], cells.ratio(r["accuracy"], 4),
             cells.ratio(r["student_accuracy"], 4), f"{r['average_bits']:g}",
             f"{r['sparsity']:.0%}" if r["sparsity"] else "-",
             " ".join(layer(r, name) for name in r["bits"])] for r in results]
