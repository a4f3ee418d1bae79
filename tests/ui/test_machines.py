"""Preferences -> Machines (the app's hostfile, Check on the engine) and Train on N Macs from the session."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtWidgets import QDialogButtonBox

from macfinetune import jobs
from macfinetune.core import hosts
from macfinetune.core.events import JobFinished, JobStarted, Stage
from macfinetune.core.hosts import HostReport
from macfinetune.core.recipe import Recipe
from macfinetune.ui.machines import MachinesDialog
from macfinetune.ui.preferences import PreferencesDialog


def _dialog(window, qtbot) -> MachinesDialog:
    dialog = MachinesDialog(window.session, window)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def _cell(dialog, row, col) -> str:
    return dialog.table.item(row, col).text()


def test_machines_are_saved_as_an_mlx_hostfile_and_read_back(window, qtbot, tmp_path):
    dialog = _dialog(window, qtbot)
    assert dialog.table.rowCount() == 1 and _cell(dialog, 0, 0) == "127.0.0.1"  # this Mac first
    dialog.add_host("me@studio.local", "10.0.0.2, 192.168.2.2")
    dialog.backend.setCurrentIndex(dialog.backend.findData("jaccl"))
    dialog.accept()
    path = window.session.machines_file()
    assert path == tmp_path / "data" / "machines.json"
    assert json.loads(path.read_text()) == {"backend": "jaccl", "envs": [], "hosts": [
        {"ssh": "127.0.0.1", "ips": []}, {"ssh": "me@studio.local", "ips": ["10.0.0.2", "192.168.2.2"]}]}
    assert hosts.load_hostfile(path).size == 2  # what `train --hosts` and mlx.launch read
    again = _dialog(window, qtbot)
    assert [_cell(again, r, 0) for r in range(again.table.rowCount())] == ["127.0.0.1", "me@studio.local"]
    assert again.backend.currentData() == "jaccl" and _cell(again, 1, 1) == "10.0.0.2, 192.168.2.2"
    prefs = PreferencesDialog(window.settings, window, session=window.session)
    qtbot.addWidget(prefs)
    assert prefs.machines.text() == "2 Macs, jaccl backend (127.0.0.1, studio.local)"


def test_a_row_without_ssh_is_refused_beside_the_buttons(window, qtbot):
    dialog = _dialog(window, qtbot)
    dialog.add_host("", "10.0.0.9")
    dialog.accept()
    assert "hosts[1]" in dialog.error.text() and dialog.isVisible()
    assert not window.session.machines_file().exists()


def test_check_runs_on_the_engine_and_lists_each_hosts_problem(window, qtbot, engine):
    dialog = _dialog(window, qtbot)
    dialog.add_host("mini", "")
    dialog.check.click()
    name, fn, args = engine.calls[-1]
    assert (name, fn) == ("check_hosts", jobs.check_hosts) and args["hostfile"].size == 2
    assert not dialog.check.isEnabled() and dialog.report.toPlainText() == "Checking…"
    engine.send(JobStarted(), Stage("check_hosts", "127.0.0.1: answered"))
    assert dialog.report.toPlainText().endswith("127.0.0.1: answered")
    problem = "mini: not reachable by SSH without a password (Permission denied); add your key with `ssh-copy-id mini`"
    engine.send(JobFinished(hosts.HostCheck((HostReport("127.0.0.1", True), HostReport("mini", False, "Permission denied")),
                                            (problem,))))
    assert dialog.report.toPlainText() == problem and dialog.check.isEnabled()


def test_the_check_job_judges_real_probes(tmp_path):
    """jobs.check_hosts on this machine's own entries (no SSH): both answer with the same versions."""
    events = []
    from macfinetune.core.control import JobControl

    found = jobs.check_hosts(events.append, JobControl(), hostfile=hosts.local_hostfile(2))
    reports, problems = found.reports, found.problems
    assert problems == () and [r.reachable for r in reports] == [True, True] and reports[0].versions["mlx"]
    assert [e.message for e in events] == ["127.0.0.1: answered", "127.0.0.1: answered"]


def test_session_starts_a_prepared_run_on_the_machines(window, engine, tmp_path):
    hostfile = hosts.local_hostfile(2)
    window.session.prepare(Recipe(), tmp_path / "run")
    window.session.start(hostfile=hostfile)
    name, fn, args = engine.calls[-1]
    assert (name, fn) == ("train_hosts", jobs.train_hosts)
    assert args == {"recipe": Recipe(), "run_dir": tmp_path / "run", "hostfile": hostfile, "allow_over_budget": False}
    assert window.session.is_training and window.session.run_dir == str(tmp_path / "run")
    one = hosts.local_hostfile(1)  # one Mac is an ordinary run
    engine.send(JobFinished(None))
    window.session.prepare(Recipe(), tmp_path / "run2")
    window.session.start(hostfile=one)
    assert engine.calls[-1][0] == "train"


def test_machines_file_sits_in_the_data_folder(window, tmp_path):
    assert Path(window.session.machines_file()).parent == tmp_path / "data"


def test_resume_continues_a_multi_mac_run_on_the_machines_and_a_one_mac_run_here(window, engine, tmp_path):
    machines = hosts.Hostfile((hosts.Host("127.0.0.1"), hosts.Host("studio")), "ring")
    hosts.save_hostfile(window.session.machines_file(), machines)
    multi, single, odd = tmp_path / "multi", tmp_path / "single", tmp_path / "odd"
    for folder in (multi, single, odd):
        folder.mkdir()
    hosts.write_run_layout(multi, 2, 4)
    hosts.write_run_layout(odd, 3, 3)  # a global batch of 3 does not divide over 2 Macs
    window.session.resume_run(multi)
    name, fn, args = engine.calls[-1]
    assert (name, fn, args["run_dir"], args["hostfile"].size) == ("resume_hosts", jobs.resume_hosts, multi, 2)
    engine.send(JobFinished(None))
    for folder in (single, odd):
        window.session.resume_run(folder)
        assert engine.calls[-1] == ("resume", folder)
        engine.send(JobFinished(None))
    window.session.machines_file().unlink()  # no Machines: every run resumes here
    window.session.resume_run(multi)
    assert engine.calls[-1] == ("resume", multi)


def test_a_bad_host_name_or_address_is_said_beside_its_row_and_save_is_off(window, qtbot):
    dialog = _dialog(window, qtbot)
    save = dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Save)
    dialog.add_host("bad host name with spaces", "not-an-ip")
    assert not save.isEnabled()
    assert dialog.table.item(1, 0).toolTip().startswith("'bad host name with spaces' is not a host name")
    assert dialog.table.item(1, 1).toolTip().startswith("'not-an-ip' is not an IP address")
    assert dialog.error.text().startswith("Row 2: 'bad host name with spaces' is not a host name")
    dialog.accept()
    assert dialog.isVisible() and not window.session.machines_file().exists()
    dialog.table.item(1, 0).setText("mini.local")
    dialog.table.item(1, 1).setText("10.0.0.3")
    assert save.isEnabled() and dialog.error.text() == "" and dialog.table.item(1, 0).toolTip() == ""
    dialog.accept()
    assert hosts.load_hostfile(window.session.machines_file()).hosts[1].ips == ("10.0.0.3",)
