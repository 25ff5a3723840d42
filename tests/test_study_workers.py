"""Several worker processes share one Optuna study: no trial lost, none duplicated.

Two workers (``python -m deepgrad.tuning worker``) run at the same time against

- an embedded storage that needs no server: Optuna's JournalStorage on a journal file;
- a real PostgreSQL server, started on loopback in a temporary directory by the fixture below
  (Debian's ``postgresql`` package: ``initdb`` and ``pg_ctl``). Where no server can be started
  (the binaries are missing, or cannot run here) the test is skipped and says why.
"""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from deepgrad import tuning

TRIALS_PER_WORKER = 12
WORKERS = 2


def _run_workers(storage: str, study: str) -> None:
    """Start the workers together and wait for all of them; each must exit cleanly and silently."""
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    procs = [subprocess.Popen([sys.executable, "-m", "deepgrad.tuning", "worker", "--storage", storage,
                               "--study", study, "--trials", str(TRIALS_PER_WORKER), "--seed", str(seed)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for seed in range(WORKERS)]
    results = [(proc.communicate(timeout=300), proc.returncode) for proc in procs]
    for (out, err), returncode in results:
        assert returncode == 0, err
        assert out == "" and err == "", (out, err)


def _check_one_study(storage, study: str) -> None:
    summaries = optuna.study.get_all_study_summaries(storage)
    assert [s.study_name for s in summaries] == [study]  # one study, not one per worker
    trials = optuna.load_study(study_name=study, storage=storage).trials
    # none lost: every trial of every worker is there, finished
    assert len(trials) == WORKERS * TRIALS_PER_WORKER
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # none duplicated: trial numbers 0..n-1 once each, and distinct trials
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert len({t._trial_id for t in trials}) == len(trials)
    assert len({(t.params["x"], t.params["y"]) for t in trials}) == len(trials)
    for t in trials:
        assert t.value == pytest.approx((t.params["x"] - 2) ** 2 + (t.params["y"] + 1) ** 2)


def test_two_workers_share_a_journal_file(tmp_path):
    url = f"journal:{tmp_path / 'study.log'}"
    _run_workers(url, "shared")
    _check_one_study(tuning.open_storage(url), "shared")


def test_worker_returns_the_trials_it_ran(tmp_path):
    url = f"journal:{tmp_path / 'study.log'}"
    assert tuning.worker(url, "s", 3) == 3
    assert tuning.worker(url, "s", 2) == 2  # joins the existing study
    assert len(optuna.load_study(study_name="s", storage=tuning.open_storage(url)).trials) == 5
    with pytest.raises(ValueError, match="objective"):
        tuning.worker(url, "s", 1, objective="nope")


# ---------------------------------------------------------------------------------------------
# PostgreSQL on loopback
# ---------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    for name in ("initdb", "pg_ctl"):
        if shutil.which(name) is None:
            break
    else:
        return Path(shutil.which("initdb")).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server on 127.0.0.1 and a free port; yields its URL."""
    pytest.importorskip("psycopg2", reason="psycopg2 (psycopg2-binary) is needed to talk to PostgreSQL")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): on Debian, apt-get install postgresql")
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the 'postgres' user
        runuser = shutil.which("runuser")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            runuser = None
        if runuser is None:
            pytest.skip("running as root, and no 'postgres' user or runuser to start PostgreSQL as")
        prefix = [runuser, "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="deepgrad-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if prefix:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = _free_port()
    log = root / "server.log"

    def run(*args):
        return subprocess.run(prefix + [str(bindir / args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=120)

    try:
        made = run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
        if made.returncode != 0:
            pytest.skip(f"initdb could not create a cluster here: {made.stderr.strip()[-300:]}")
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        started = run("pg_ctl", "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start")
        if started.returncode != 0:
            text = log.read_text() if log.exists() else started.stderr
            pytest.skip(f"PostgreSQL could not start on loopback: {text.strip()[-300:]}")
        try:
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
        finally:
            run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_postgresql_database(postgres_url):
    # Creating the database schema is not safe to race (two processes creating the same tables and
    # types collide), so it is made once, before the workers, as the chapter tells the reader to.
    # The study itself is created by whichever worker gets there first; both must end up in it.
    storage = tuning.open_storage(postgres_url)
    _run_workers(postgres_url, "shared")
    try:
        _check_one_study(storage, "shared")
    finally:
        storage.remove_session()
        storage.engine.dispose()
