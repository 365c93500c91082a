"""Gate results for CI: gate.json, JUnit XML (one test case per platform) and a Markdown summary
(ready for $GITHUB_STEP_SUMMARY or a pull-request comment)."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from edgekd.fileio import atomic_path, write_json
from edgekd.gate.verdict import Verdict, explain


def junit_xml(v: Verdict) -> str:
    cases = []
    for platform, chosen in v.chosen.items():
        mine = [c for c in v.candidates if c.platform == platform]
        name = quoteattr(f"{platform}: a file passes the release policy")
        if chosen is not None or not mine:
            cases.append(f"  <testcase classname=\"edgekd.gate\" name={name}/>")
            continue
        detail = "\n".join(f"{c.model}/{c.artifact}: " + "; ".join(str(f) for f in c.failures) for c in mine)
        cases.append(f"  <testcase classname=\"edgekd.gate\" name={name}>\n"
                     f"    <failure message={quoteattr(f'no {platform} file passes the policy')}>"
                     f"{escape(detail)}</failure>\n  </testcase>")
    failures = sum(1 for c in cases if "<failure" in c)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="edgekd-gate" tests="{len(cases)}" '
            f'failures="{failures}" errors="0">\n' + "\n".join(cases) + "\n</testsuite>\n")


def markdown(v: Verdict) -> str:
    out = [f"## edgekd release gate: {'✅ PASS' if v.passed else '❌ FAIL'}", ""]
    out += ["| platform | ships | size B | retention | quant |", "|---|---|---|---|---|"]
    for platform, c in v.chosen.items():
        if c is None:
            out.append(f"| {platform} | nothing passes | | | |")
        else:
            m = c.measured()
            ret = "unknown" if m is None or m.retention is None else f"{m.retention:.4f}"
            out.append(f"| {platform} | {c.model}/{c.artifact} | {c.size_bytes} | {ret} | {c.quant} |")
    failed = [c for c in v.candidates if c.failures]
    if failed:
        out += ["", "<details><summary>Rules each rejected file broke</summary>", ""]
        out += [f"- **{c.platform}** `{c.model}/{c.artifact}`: " + "; ".join(str(f) for f in c.failures)
                for c in failed]
        out += ["", "</details>"]
    out += [f"- note: {n}" for n in v.notes]
    return "\n".join(out) + "\n"


def write_gate_outputs(v: Verdict, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    write_json(out_dir / "gate.json", v.to_dict())
    with atomic_path(out_dir / "junit.xml") as tmp:
        tmp.write_text(junit_xml(v))
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text(markdown(v))


__all__ = ["junit_xml", "markdown", "write_gate_outputs", "explain"]
