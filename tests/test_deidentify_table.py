"""The complete PS3.15 Table E.1-1 in data_prep.deidentify: a value planted in every attribute.

One DICOM file carries a planted value in every attribute of the table whose VR can hold one,
at the top level AND in an item at nesting depth 2, plus private tags at both depths. After
`deidentify_folder`, no planted value may appear in any output byte (the DICOM, the reports),
and every planted element must be gone or changed when the output is parsed. The options of
PS3.15 E.3 (Retain Safe Private, Clean Descriptors, Retain Longitudinal Temporal) are checked
against the same file: each keeps what it names and nothing else.
"""
from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from data_prep import deidentify as deid
from data_prep.io import write_dicom_grayscale
from tests.test_deidentify import synthetic_fan_frame

TABLE_CSV = deid.PROFILE_TABLE_PATH
# Attributes written in every planted file (not table rows): the tree that holds the nested
# copy, and the private blocks. Neither sequence is in the table, so the walk must enter it.
OUTER_SEQUENCE, INNER_SEQUENCE = "AnatomicRegionSequence", "AnatomicRegionModifierSequence"
PRIVATE = [("PHI VENDOR", 0x0009, 0x01, "LO", "ZQPRIVATE1PHI"),
           ("SAFE VENDOR", 0x0011, 0x10, "LO", "KEEPSAFE10"),
           ("SAFE VENDOR", 0x0011, 0x11, "LO", "ZQPRIVATE2PHI")]
SAFE = frozenset({("SAFE VENDOR", 0x0011, 0x10)})
# Rows not planted: the command group (0000) and the file meta (0002) never sit in a stored
# data set; the file meta's Media Storage SOP Instance UID is checked on its own below.
NOT_IN_DATASETS = ("0000", "0002")


def _guess_vr(name: str) -> str:
    """VR of the 25 rows newer than pydicom 3.0.2's dictionary (from the table's name)."""
    if name.endswith("Sequence"):
        return "SQ"
    if name.endswith("DateTime"):
        return "DT"
    if name.endswith("URI"):
        return "UR"
    return "LT" if "Comment" in name else "LO"


def _vr(row: deid.ProfileRow) -> str:
    if "x" in row.tag:
        return {"60xx3000": "OW", "60xx4000": "LT"}.get(row.tag, "LO")
    vr = dictionary_VR(int(row.tag, 16)) if row.keyword else _guess_vr(row.name)
    return vr.split(" or ")[0]


def _tag(row: deid.ProfileRow) -> int:
    # Repeating groups: plant in group 5000/6000; the curve row (all of 50xx) at (5000,0022).
    return int(row.tag.replace("xx", "00", 1).replace("xxxx", "0022"), 16)


def _marker(index: int, vr: str) -> str | bytes | int | None:
    """A planted value for `vr`, unique to `index`; None where the VR cannot hold one."""
    day = datetime.date(1800, 1, 1) + datetime.timedelta(days=index)
    text = f"ZQ{index:04d}PHI"
    return {"AE": text, "CS": text, "LO": text, "LT": text, "PN": text, "SH": text,
            "ST": text, "UC": text, "UT": text, "UR": f"http://{text.lower()}",
            "DA": day.strftime("%Y%m%d"), "DT": day.strftime("%Y%m%d") + f"121314.{index:06d}",
            "TM": f"1213{index % 60:02d}.{index:06d}", "AS": f"{index % 1000:03d}W",
            "DS": f"7{index:04d}.5", "IS": f"7{index:04d}77",
            "UI": f"1.2.826.0.1.3680043.9.7777.9{index:04d}",
            "OB": text.encode() + b"\x00", "OW": text.encode() + b"\x00",
            "UN": text.encode() + b"\x00", "US": 40000 + index}.get(vr)


def _planted_rows() -> list[tuple[deid.ProfileRow, int, str]]:
    rows = []
    for row in deid.PROFILE_TABLE:
        if row.tag[:4] in NOT_IN_DATASETS:
            continue
        vr = _vr(row)
        if vr == "SQ" or _marker(0, vr) is not None:
            rows.append((row, _tag(row), vr))
    return rows


def _plant(ds: Dataset, offset: int) -> dict[int, object]:
    """Plant every table attribute into `ds`; return tag -> planted value (SQ: the marker of
    the CodeMeaning inside its one item)."""
    planted: dict[int, object] = {}
    for index, (row, tag, vr) in enumerate(_planted_rows(), start=offset):
        if vr == "SQ":
            item = Dataset()
            item.CodeMeaning = _marker(index, "LO")
            ds.add(DataElement(tag, "SQ", Sequence([item])))
            planted[tag] = item.CodeMeaning
        else:
            ds.add(DataElement(tag, vr, _marker(index, vr)))
            planted[tag] = _marker(index, vr)
    return planted


def _add_private(ds: Dataset, suffix: str) -> list[str]:
    values = []
    for creator, group, offset, vr, value in PRIVATE:
        ds.private_block(group, creator, create=True).add_new(offset, vr, value + suffix)
        values.append(value + suffix)
    return values


def _write_planted(path: Path) -> dict[str, object]:
    """The planted file; returns {'top': tag->value, 'nested': tag->value, 'private': [...]}."""
    write_dicom_grayscale(path, synthetic_fan_frame()[0])
    ds = pydicom.dcmread(path)
    top = _plant(ds, 0)
    deep = Dataset()
    nested = _plant(deep, 1000)
    private = _add_private(ds, "") + _add_private(deep, "N")
    middle = Dataset()
    middle.CodeMeaning = "depth one"
    middle.StudyInstanceUID = top[0x0020000D]  # the same UID at depth 1: one map for all depths
    middle.add(DataElement(pydicom.datadict.tag_for_keyword(INNER_SEQUENCE), "SQ",
                           Sequence([deep])))
    setattr(ds, OUTER_SEQUENCE, Sequence([middle]))
    ds.file_meta.MediaStorageSOPInstanceUID = top[0x00080018]
    ds.save_as(path, enforce_file_format=True)
    return {"top": top, "nested": nested, "private": private}


def _needles(planted: dict[str, object], also_tags: frozenset[int] = frozenset()) -> dict[str, bytes]:
    """Planted values that can be searched for in bytes: the text markers (ZQnnnnPHI). Dates,
    times and numbers are checked when parsed: as bytes, a run of 7 or 8 digits turns up by
    chance inside the random replacement UIDs (seen once in a few runs). `also_tags`: tags whose
    values are searched for too, whatever they hold (the dates an option keeps)."""
    needles = {}
    for where in ("top", "nested"):
        for tag, value in planted[where].items():
            if isinstance(value, (str, bytes)) and len(value) >= 6 and (
                    tag in also_tags
                    or b"PHI" in (value.encode() if isinstance(value, str) else value)):
                data = value.encode() if isinstance(value, str) else value.rstrip(b"\x00")
                needles[f"{where} ({tag >> 16:04X},{tag & 0xFFFF:04X})"] = data
    for value in planted["private"]:
        needles[f"private {value}"] = value.encode()
    return needles


def _run(tmp_path: Path, options: deid.DeidentificationOptions | None = None):
    source = tmp_path / "in"
    source.mkdir()
    planted = _write_planted(source / "planted.dcm")
    deid.deidentify_folder(source, tmp_path / "out", progress_every=0, options=options)
    outputs = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    return planted, outputs, pydicom.dcmread(tmp_path / "out" / "planted.dcm")


def _nested(ds: Dataset) -> Dataset:
    return ds[OUTER_SEQUENCE][0][INNER_SEQUENCE][0]


def _survivors(ds: Dataset, planted: dict[int, object]) -> list[str]:
    """Planted elements still present with their planted value (or sequence content)."""
    left = []
    for tag, value in planted.items():
        if tag not in ds:
            continue
        element = ds[tag]
        if element.VR == "SQ":
            if any(item.get("CodeMeaning") == value for item in element.value):
                left.append(f"({tag >> 16:04X},{tag & 0xFFFF:04X})")
        elif element.value not in ("", None, b"") and (
                element.value == value or str(element.value) == str(value)
                or (isinstance(value, bytes) and bytes(element.value) == value)):
            left.append(f"({tag >> 16:04X},{tag & 0xFFFF:04X})")
    return left


def test_table_is_the_vendored_2026c_table():
    """655 rows: the size of dicom-anonymizer 2.1.0's dicomfields_2026c (ALL_TAGS); the
    comment line names the source; every row has a known code."""
    header = TABLE_CSV.read_text(encoding="utf-8").splitlines()[0]
    assert "dicom-anonymizer 2.1.0" in header and "655 rows" in header
    assert len(deid.PROFILE_TABLE) == deid.PROFILE_TABLE_ROWS == 655
    assert len({row.tag for row in deid.PROFILE_TABLE}) == 655
    assert {row.code for row in deid.PROFILE_TABLE} <= {
        "D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
    assert {row.action for row in deid.PROFILE_TABLE} == {"D", "Z", "X", "U"}
    assert (TABLE_CSV.parent / "ps315_table_e1_1.LICENSE").read_text().startswith(
        "Copyright 2020, Kitware Europe")


def test_vendor_script_reproduces_the_table_when_the_package_is_installed(tmp_path):
    """Regenerating from the package gives the same bytes (run where dicom-anonymizer 2.1.0
    is installed: `pip install --no-deps dicom-anonymizer==2.1.0`)."""
    import importlib.util

    spec = importlib.util.find_spec("dicomanonymizer")
    if spec is None:
        pytest.skip("dicom-anonymizer is not installed (it is data here, not a dependency)")
    import runpy

    vendor = runpy.run_path(str(Path(__file__).resolve().parent.parent / "scripts"
                                / "vendor_ps315_table.py"))
    module = Path(list(spec.submodule_search_locations)[0]).parent / vendor["SOURCE_MODULE"]
    rows = sorted(vendor["parse"](module.read_text(encoding="utf-8")))
    assert [(r.tag, r.name, r.code) for r in sorted(deid.PROFILE_TABLE, key=lambda r: r.tag)] \
        == rows


@pytest.mark.parametrize("keyword", [
    "StationAETitle", "IdentifyingComments", "PersonTelecomInformation",
    "InsurancePlanIdentification", "ClinicalTrialSponsorName", "ClinicalTrialSubjectID",
    "ClinicalTrialProtocolID", "GPSLatitude", "GPSLongitude", "CameraOwnerName",
    "LensSerialNumber", "PatientName", "StudyInstanceUID"])
def test_attributes_the_old_profile_missed_are_in_the_table(keyword):
    assert keyword in deid.BASIC_PROFILE_ACTIONS


@pytest.mark.parametrize("code, keyword, action", [
    ("X/Z", "PatientSexNeutered", "X"), ("Z", "PatientName", "Z"),
    ("X/Z/D", "InstitutionName", "X"), ("Z/D", "ContentCreatorName", "Z"),
    ("X/D", "ContentCreatorName", "D"), ("X/Z/U*", "ReferencedImageSequence", "X"),
    ("Z/D", "SomethingElse", "Z"), ("U", "StudyInstanceUID", "U")])
def test_choice_codes_resolve(code, keyword, action):
    assert deid._resolve_choice(code, keyword) == action


def test_planted_file_really_carries_every_value(tmp_path):
    """The test can fail: before de-identification every needle is in the file's bytes."""
    planted = _write_planted(tmp_path / "planted.dcm")
    data = (tmp_path / "planted.dcm").read_bytes()
    needles = _needles(planted)
    assert len(planted["top"]) >= 600 and len(planted["nested"]) == len(planted["top"])
    assert [name for name, needle in needles.items() if needle not in data] == []
    ds = pydicom.dcmread(tmp_path / "planted.dcm")
    assert len(_survivors(ds, planted["top"])) == len(planted["top"])
    assert len(_survivors(_nested(ds), planted["nested"])) == len(planted["nested"])


def test_no_planted_value_survives_in_any_output_byte(tmp_path):
    planted, outputs, ds = _run(tmp_path)
    needles = _needles(planted)
    for path in outputs:
        data = path.read_bytes()
        assert [name for name, needle in needles.items() if needle in data] == [], path.name
    assert _survivors(ds, planted["top"]) == []
    assert _survivors(_nested(ds), planted["nested"]) == []
    assert not any(element.tag.is_private for element in ds.iterall())
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert ds[OUTER_SEQUENCE][0].StudyInstanceUID == ds.StudyInstanceUID  # one UID map


@pytest.mark.parametrize("options, code, kept", [
    (deid.DeidentificationOptions(retain_safe_private=SAFE), "113111", {"KEEPSAFE10",
                                                                         "KEEPSAFE10N"}),
    (deid.DeidentificationOptions(retain_dates=True), "113106", "dates"),
    (deid.DeidentificationOptions(clean_descriptors=True), "113105", set()),
])
def test_each_option_keeps_what_it_names_and_nothing_else(tmp_path, options, code, kept):
    planted, outputs, ds = _run(tmp_path, options)
    data = b"".join(path.read_bytes() for path in outputs)
    date_tags = {tag for row, tag, vr in _planted_rows() if vr in ("DA", "DT", "TM")}
    needles = _needles(planted, frozenset(date_tags))
    survivors = {name for name, needle in needles.items() if needle in data}
    if kept == "dates":
        expected = {name for name in needles if not name.startswith("private")
                    and int(name.split("(")[1][:4] + name.split(",")[1][:4], 16) in date_tags}
        assert expected and survivors == expected
        assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
    else:
        assert survivors == {f"private {value}" for value in kept}
    assert code in [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]


@pytest.mark.parametrize("value, expected", [
    ("Fetal profile DOE 12345", "Fetal profile"),
    ("ZQ0001PHI", ""),
    ("Jane's scan at ST MARY hospital", "s scan at hospital"),
    ("midsagittal view", "midsagittal view"),
])
def test_clean_descriptors_removes_identifying_words(value, expected):
    ds = Dataset()
    ds.PatientName = "DOE^JANE"
    ds.InstitutionName = "ST MARY"
    ds.StudyDescription = value
    deid.deidentify_dataset(ds, options=deid.DeidentificationOptions(clean_descriptors=True))
    assert ds.StudyDescription == expected
    assert "InstitutionName" not in ds


@pytest.mark.parametrize("text, column, row", [
    ("private_creator,group\nA,0011\n", "element", None),
    ("private_creator,group,element\nA,0010,10\n", "group", 1),
    ("private_creator,group,element\nA,0011,zz\n", "element", 1),
    ("private_creator,group,element\nA,0011,10\n,0011,11\n", "private_creator", 2),
])
def test_safe_private_list_errors_name_row_and_column(tmp_path, text, column, row):
    path = tmp_path / "safe.csv"
    path.write_text(text)
    with pytest.raises(deid.InputError) as caught:
        deid.read_safe_private_list(path)
    assert (caught.value.column, caught.value.row) == (column, row)


def test_safe_private_list_reads_hex(tmp_path):
    path = tmp_path / "safe.csv"
    path.write_text("private_creator,group,element\nSAFE VENDOR,0011,10\nGEMS_X, 0019 ,1A\n")
    assert deid.read_safe_private_list(path) == {("SAFE VENDOR", 0x11, 0x10),
                                                 ("GEMS_X", 0x19, 0x1A)}
