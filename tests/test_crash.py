"""Crash reports: what they hold and what they never hold; which are offered at the next launch."""

import os

from macfinetune.core import crash
from macfinetune.core.hardware import GB, GIB, working_set_for
from macfinetune.core.machine_facts import machine_facts


def _raise_with_row(row_text: str, token: str):
    secret_local = row_text  # noqa: F841 (a local the report must not carry)
    raise ValueError(f"row 12 has text {row_text!r} and the token {token} failed")


def test_a_report_has_type_frames_and_versions_but_no_row_text_token_or_locals():
    row, token = "My private diary entry about Alice", "hf_" + "a" * 34
    try:
        _raise_with_row(row, token)
    except ValueError as e:
        text = crash.format_report(type(e), e, e.__traceback__, {"mlx": "0.32.4"})
    assert "ValueError: row 12 has text '<34 chars>' and the token hf_<redacted> failed" in text
    assert "in _raise_with_row" in text
    assert "mlx: 0.32.4" in text
    assert "diary" not in text and token not in text and "secret_local =" not in text.split("in _raise")[0]
    assert os.path.expanduser("~") not in text


def test_written_reports_are_offered_once_and_empty_fault_logs_go(tmp_path):
    report = crash.write_report("ValueError: x\n", tmp_path)
    (tmp_path / "fault-20260101-000000-1.log").write_text("", encoding="utf-8")
    (tmp_path / "fault-20260101-000001-2.log").write_text("Fatal Python error: Segmentation fault\n",
                                                          encoding="utf-8")
    own = crash.fault_log_path(tmp_path)
    own.write_text("", encoding="utf-8")  # this process's open log: not a crash
    pending = crash.pending_reports(tmp_path)
    assert sorted(p.path.name for p in pending) == sorted([report.name, "fault-20260101-000001-2.log"])
    assert not (tmp_path / "fault-20260101-000000-1.log").exists()
    for p in pending:
        assert crash.mark_seen(p).is_file()
    assert crash.pending_reports(tmp_path) == []


def test_machine_facts_say_what_is_wrong_in_words(tmp_path):
    facts = {f.label: f for f in machine_facts(tmp_path / "not" / "yet" / "made", memory_bytes=8 * 1024**3)}
    assert facts["Memory"].value == "8 GB unified memory"
    assert not facts["Memory"].ok and "16 GB" in facts["Memory"].advice
    assert facts["GPU budget"].value.startswith(f"{working_set_for(8 * GIB) / GB:.1f} GB (Metal's")
    assert "free for" in facts["Free disk"].value
    assert facts["MLX"].ok and facts["MLX"].value.startswith("MLX 0.")
    assert not facts["Chip"].ok and "CPU" in facts["Chip"].advice  # this Linux machine is not Apple silicon
