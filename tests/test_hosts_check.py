"""`macfinetune hosts check`: every host asked over SSH, what is wrong said per host; `--copy` copies.

SSH is replaced by a script (``MACFINETUNE_SSH``) that runs the command on this machine as if it were
the host, so the probe really runs (`macfinetune hosts probe --json`); hosts named ``bad*`` refuse the
key as ssh does (exit 255), ``old`` answers with another MLX version.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from macfinetune import cli


def hostfile(tmp_path, *names) -> Path:
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps({"backend": "ring", "hosts": [{"ssh": n, "ips": ["10.0.0.1"]} for n in names]},
                               indent=2))
    return path


def test_ready_hosts_answer_over_ssh_with_their_versions_and_memory(fake_ssh, tmp_path, tiny_model, capsys):
    data = Path(__file__).parent / "data"
    code = cli.main(["hosts", "check", str(hostfile(tmp_path, "me@studio.local", "laptop")), "--model",
                     str(tiny_model), "--data", str(data), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert out["problems"] == []
    assert [h["host"] for h in out["hosts"]] == ["me@studio.local", "laptop"]
    assert all(h["versions"]["mlx"] and h["usable_gb"] > 0 and h["free_disk_gb"] > 0 for h in out["hosts"])
    assert out["need_gb"] > 0  # the estimate for the tiny model, per Mac
    asked = fake_ssh.read_text().splitlines()
    assert asked[0].startswith(f"me@studio.local {sys.executable} -m macfinetune hosts probe --json --need ")
    assert str(tiny_model) in asked[0]


def test_each_problem_names_its_host(fake_ssh, tmp_path, tiny_model, capsys):
    code = cli.main(["hosts", "check", str(hostfile(tmp_path, "studio", "bad-mini", "old")), "--model",
                     str(tiny_model), "--data", str(tmp_path / "not-here.jsonl")])
    text = capsys.readouterr().out
    assert code == 2
    assert "problem: bad-mini: not reachable by SSH without a password (bad-mini: Permission denied (publickey).)" \
        in text and "ssh-copy-id bad-mini" in text
    assert "problem: old: mlx 0.1.0, but studio has" in text
    assert f"problem: studio: {tmp_path / 'not-here.jsonl'} is not there" in text
    assert "ready:" not in text


def test_not_enough_memory_on_a_host_is_said_with_both_figures(fake_ssh, tmp_path, capsys):
    # Qwen3-14B full fine-tuning: far beyond what this machine lets MLX use
    code = cli.main(["hosts", "check", str(hostfile(tmp_path, "studio")), "--model", "Qwen/Qwen3-14B",
                     "--recipe", "qwen3-14b-full"])
    text = capsys.readouterr().out
    assert code == 2 and "problem: studio: the run needs about" in text and "that Mac can give MLX" in text


def test_copy_sends_what_a_host_is_missing_with_rsync_to_the_same_path(fake_ssh, tmp_path, capsys, monkeypatch):
    data = tmp_path / "mydata.jsonl"
    data.write_text('{"text": "hi"}\n')
    monkeypatch.setenv("FAKE_MISSING", str(data))  # the host 'far' answers that it lacks the data
    hosts = str(hostfile(tmp_path, "studio", "far"))
    assert cli.main(["hosts", "check", hosts, "--data", str(data)]) == 2
    assert f"problem: far: {data} is not there; copy it (the app's Copy to the Macs, or " \
        "`macfinetune hosts check --copy`)" in \
        capsys.readouterr().out
    assert "rsync" not in fake_ssh.read_text()  # nothing is copied unless asked
    cli.main(["hosts", "check", hosts, "--data", str(data), "--copy"])
    log = fake_ssh.read_text()
    assert f"far mkdir -p {tmp_path}" in log and "studio mkdir" not in log  # only the host that lacks it
    assert "rsync -a --partial --progress -e" in log and f"{data} far:{tmp_path}/" in log


def test_a_broken_hostfile_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "hosts.json"
    bad.write_text('{"backend": "carrier-pigeon", "hosts": ["a"]}')
    assert cli.main(["hosts", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line 1" in err and "carrier-pigeon" in err


def test_probe_prints_this_machines_facts(capsys, tmp_path):
    assert cli.main(["hosts", "probe", "--json", "--need", str(tmp_path / "nope")]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert set(facts["versions"]) == {"macfinetune", "mlx", "mlx-lm"} and facts["missing"] == [str(tmp_path / "nope")]


def test_the_apps_check_job_judges_the_recipe_and_copies_with_progress(fake_ssh, tmp_path, tiny_model, monkeypatch):
    """What the wizard's Check these Macs runs: the recipe's memory per Mac, the model and data present
    on each host, and Copy to the Macs streaming rsync's progress as Stage events."""
    from macfinetune import jobs
    from macfinetune.core import hosts as hosts_mod
    from macfinetune.core.control import JobControl
    from tests.conftest import fast_recipe

    data = tmp_path / "mydata.jsonl"
    data.write_text('{"text": "hi"}\n')
    monkeypatch.setenv("FAKE_MISSING", str(data))
    recipe = fast_recipe(tiny_model, data=data)
    macs = hosts_mod.load_hostfile(hostfile(tmp_path, "studio", "far"))
    events = []
    found = jobs.check_hosts(events.append, JobControl(), hostfile=macs, recipe=recipe)
    assert found.missing and found.need_gb > 0 and found.copied == ()
    assert [p for p in found.problems if p.startswith("far: ")] == [
        f"far: {data} is not there; copy it (the app's Copy to the Macs, or `macfinetune hosts check --copy`)"]
    assert f"{tiny_model}" in fake_ssh.read_text().splitlines()[0]  # the model is asked for too
    events.clear()
    found = jobs.check_hosts(events.append, JobControl(), hostfile=macs, recipe=recipe, copy=True)
    said = [e.message for e in events]
    assert found.copied == (f"far: {data}",)
    assert f"copying {data} to far:{data}" in said
    assert any(m.startswith("copying: ") and "%" in m for m in said)  # rsync's own progress line


def test_stop_during_a_copy_ends_rsync_and_the_job(fake_ssh, tmp_path, monkeypatch):
    from macfinetune import jobs
    from macfinetune.core import hosts as hosts_mod
    from macfinetune.core.control import JobControl
    from macfinetune.core.events import Stage

    data = tmp_path / "mydata.jsonl"
    data.write_text('{"text": "hi"}\n')
    monkeypatch.setenv("FAKE_MISSING", str(data))
    monkeypatch.setenv("FAKE_RSYNC_SLOW", "20")  # a long copy: rsync counts, then waits
    control = JobControl()

    def said(event):
        if isinstance(event, Stage) and event.message.startswith("copying: "):
            control.request_stop()  # Stop pressed while rsync is copying

    with pytest.raises(jobs.Cancelled):
        jobs.check_hosts(said, control, hostfile=hosts_mod.load_hostfile(hostfile(tmp_path, "far")), data=str(data),
                         copy=True)
    log = fake_ssh.read_text()
    assert "rsync -a" in log and "rsync finished" not in log  # rsync was ended, not waited for


def test_a_hub_model_must_be_in_each_hosts_own_cache(fake_ssh, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # every fake host shares this machine's environment
    hosts = str(hostfile(tmp_path, "studio"))
    assert cli.main(["hosts", "check", hosts, "--model", "mlx-community/Tiny-Model-4bit"]) == 2
    assert ("problem: studio: mlx-community/Tiny-Model-4bit is not downloaded there; run "
            "`macfinetune models download mlx-community/Tiny-Model-4bit` on it") in capsys.readouterr().out
    assert "--need-model mlx-community/Tiny-Model-4bit" in fake_ssh.read_text()
    snapshot = cache / "models--mlx-community--Tiny-Model-4bit" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert cli.main(["hosts", "check", hosts, "--model", "mlx-community/Tiny-Model-4bit"]) == 0
    assert "ready: 1 hosts" in capsys.readouterr().out


def test_a_copy_that_fails_is_a_problem_naming_the_host_not_a_crash(fake_ssh, tmp_path, monkeypatch, capsys):
    data = tmp_path / "mydata.jsonl"
    data.write_text('{"text": "hi"}\n')
    monkeypatch.setenv("FAKE_MISSING", str(data))
    monkeypatch.setenv("FAKE_RSYNC_FAIL", "1")
    assert cli.main(["hosts", "check", str(hostfile(tmp_path, "far")), "--data", str(data), "--copy"]) == 2
    out = capsys.readouterr()
    assert f"problem: far: copying {data} failed: rsync: connection unexpectedly closed" in out.out
    assert "Traceback" not in out.err


def test_host_names_and_addresses_are_checked_as_mlx_reads_them():
    from macfinetune.core import hosts
    from macfinetune.core.problems import ProblemError

    assert hosts.host_problems("me@studio.local", ["10.0.0.2", "fe80::1"]) == []
    assert hosts.host_problems("127.0.0.1", []) == hosts.host_problems("my_mac-2", []) == []
    assert hosts.host_problems("bad host name with spaces", []) == [
        "'bad host name with spaces' is not a host name or address (user@host: letters, digits, '.', '-', '_')"]
    assert hosts.host_problems("mini", ["not-an-ip"]) == [
        "'not-an-ip' is not an IP address (MLX's ring backend connects to addresses like 10.0.0.2)"]
    with pytest.raises(ProblemError) as e:
        hosts.parse_hostfile({"hosts": [{"ssh": "127.0.0.1"}, {"ssh": "a b", "ips": []}]}, "m.json")
    assert e.value.problems[0].field == "hosts[1]" and "'a b' is not a host name" in e.value.problems[0].message
