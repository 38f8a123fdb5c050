#!/usr/bin/env python3
"""Sanity check for the RFC 4475 golden corpus in this directory.

Checks that expected.tsv is well formed and lists exactly the .sip files here,
that the per-section counts match RFC 4475, that every file still has the
bytes recorded in SHA256SUMS, and that Content-Length agrees with the body
except where the RFC message is wrong on purpose (listed in KNOWN below).

Run: python3 tests/rfc4475/check.py   (exit status 0 = all good)
"""
import hashlib
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent

# RFC 4475 section 3 layout: group -> number of messages.
SECTIONS = {"3.1.1": 13, "3.1.2": 19, "3.2": 1, "3.3": 15, "3.4": 1}

TOKENS = {
    "process", "drop", "400", "415", "416", "420", "501", "505",
    "400-or-process", "process-or-400", "400-or-501", "501-or-400", "406-or-400",
}

# Messages whose Content-Length does not describe the octets after the
# header block, on purpose.
KNOWN = {
    "dblreq": "CL 0; the octets after the empty line are a second (junk) request that must be ignored",
    "clerr": "CL 9999 is larger than the body on purpose",
    "ncl": "CL is negative on purpose",
    "mcl01": "two conflicting Content-Length headers on purpose",
    "baddn": "archive bytes have no empty line after the headers, so there is no body separator",
    "inv2543": "RFC 2543 style: no Content-Length, the body is the rest of the datagram",
}


def group_of(section):
    for g in sorted(SECTIONS, key=len, reverse=True):
        if section == g or section.startswith(g + "."):
            return g
    return None


def content_length_report(data):
    """Return (declared values, body length or None if no header terminator)."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    body = None if end < 0 else len(data) - end - 4
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", head)
    values = []
    for line in unfolded.split(b"\r\n")[1:]:
        m = re.match(rb"(?i)(content-length|l)[ \t]*:(.*)$", line)
        if m:
            values.append(m.group(2).strip().decode("ascii", "replace"))
    return values, body


def main():
    failures = []
    rows = []
    for n, line in enumerate((HERE / "expected.tsv").read_text("utf-8").splitlines(), 1):
        cols = line.split("\t")
        if len(cols) != 4 or not all(cols):
            failures.append(f"expected.tsv:{n}: want 4 non-empty tab-separated columns")
            continue
        rows.append(cols)

    names = [r[0] for r in rows]
    if len(names) != len(set(names)):
        failures.append("expected.tsv lists a name twice")

    counts = dict.fromkeys(SECTIONS, 0)
    for name, section, expect, _note in rows:
        g = group_of(section)
        if g is None:
            failures.append(f"{name}: section {section} is not one of {list(SECTIONS)}")
        else:
            counts[g] += 1
        if expect not in TOKENS:
            failures.append(f"{name}: unknown expectation token {expect!r}")
        if not (HERE / f"{name}.sip").is_file():
            failures.append(f"{name}.sip is listed but missing")

    on_disk = {p.stem for p in HERE.glob("*.sip")}
    for extra in sorted(on_disk - set(names)):
        failures.append(f"{extra}.sip is not listed in expected.tsv")

    for g, want in SECTIONS.items():
        print(f"section {g}: {counts[g]} messages (RFC 4475 has {want})")
        if counts[g] != want:
            failures.append(f"section {g}: {counts[g]} messages, want {want}")
    print(f"total: {len(rows)} messages")

    sums = {}
    for line in (HERE / "SHA256SUMS").read_text("ascii").splitlines():
        digest, fname = line.split(None, 1)
        sums[fname.lstrip("*")] = digest
    for name in names:
        path = HERE / f"{name}.sip"
        if not path.is_file():
            continue
        data = path.read_bytes()
        if sums.get(path.name) != hashlib.sha256(data).hexdigest():
            failures.append(f"{path.name}: bytes differ from SHA256SUMS")
        values, body = content_length_report(data)
        ok = body is not None and len(values) == 1 and values[0] == str(body)
        section = dict((r[0], r[1]) for r in rows)[name]
        if not ok:
            why = KNOWN.get(name)
            print(f"CL mismatch {name} ({section}): Content-Length={values or 'absent'} "
                  f"body={'no separator' if body is None else body}: {why or 'UNEXPECTED'}")
            if why is None:
                failures.append(f"{name}: unexpected Content-Length mismatch")
        elif name in KNOWN:
            failures.append(f"{name}: listed in KNOWN but Content-Length matches")

    for f in failures:
        print("FAIL:", f)
    bad = {n for n in names if any(f.startswith((n + ":", n + ".sip")) for f in failures)}
    print(f"{len(names) - len(bad)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
