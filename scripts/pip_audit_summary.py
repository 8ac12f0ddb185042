"""Summarize ``reports/pip-audit.json`` for ``make audit``; exit 1 only for fixable vulnerabilities.

pip-audit cannot tell "nothing vulnerable" from "nothing checked" in its exit code: without its
vulnerability service (no network, or an index mirror without PyPI's JSON API) every package is
skipped and it still says "No known vulnerabilities found". This prints how many packages were
really checked and lists the vulnerabilities. With AUDIT_STRICT=1 it fails when one has a fixed
version to upgrade to; an audit that could not run or check anything is a warning, never a failure.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(path: str) -> int:
    report = Path(path)
    if not report.is_file() or not report.read_text(encoding="utf-8").strip():
        print(f"pip-audit: WARNING no report at {path}: the audit could not run (network?)")
        return 0
    deps = json.loads(report.read_text(encoding="utf-8")).get("dependencies", [])
    checked = [d for d in deps if "skip_reason" not in d]
    skipped = [d for d in deps if "skip_reason" in d]
    vulnerable = [(d, v) for d in checked for v in d.get("vulns", [])]
    print(f"pip-audit: {len(checked)} of {len(deps)} packages checked, {len(skipped)} skipped, "
          f"{len(vulnerable)} known vulnerabilities")
    if deps and not checked:
        reason = skipped[0]["skip_reason"] if skipped else "unknown"
        print(f"pip-audit: WARNING nothing was checked (e.g. {reason}); "
              "the vulnerability service is unreachable from here")
    fixable = 0
    for dep, vuln in vulnerable:
        fixes = vuln.get("fix_versions") or []
        fixable += bool(fixes)
        aliases = ", ".join(vuln.get("aliases") or [])
        fix_text = f"fixed in {', '.join(fixes)}" if fixes else "no fix released"
        print(f"  {dep['name']} {dep['version']}: {vuln['id']} ({aliases}) {fix_text}")
    # Report-only by default so a newly published advisory cannot block every build at once;
    # AUDIT_STRICT=1 turns fixable vulnerabilities into a failure.
    if fixable:
        print(f"pip-audit: {fixable} vulnerabilities have a released fix: upgrade them")
    return 1 if fixable and os.environ.get("AUDIT_STRICT") == "1" else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "reports/pip-audit.json"))
