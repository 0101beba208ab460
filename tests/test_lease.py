"""The lease: one owner per job, with real processes racing, pausing and failing to renew."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fmnist.lease import Busy, Holder, Lease, LeaseLost

HOLD = """
import os, sys, time
from pathlib import Path
from fmnist.lease import Lease
lease = Lease(Path(sys.argv[1]), stale_after=float(sys.argv[2]))
lease.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[3]))
if sys.argv[4] == "release":
    lease.release()
"""


def holder_process(path, stale_after=2.0, hold=30.0, release=True) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(stale_after), str(hold), "release" if release else "keep"],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def current(path: Path) -> Holder:
    lease = Lease(path)
    generation = lease.generations()[-1]
    return Holder(**json.loads(lease._file(generation).read_text()))


def test_a_live_owner_in_another_process_keeps_the_job(tmp_path):
    path = tmp_path / "job.lease"
    owner = holder_process(path)
    try:
        start = time.monotonic()
        with pytest.raises(Busy, match=rf"already running on host {socket.gethostname()} as process {owner.pid}"):
            Lease(path, stale_after=2.0).acquire()
        assert time.monotonic() - start < 2.0  # its heartbeat moved within the watch
        time.sleep(2.5)  # longer than stale_after: only its heartbeat keeps it
        with pytest.raises(Busy):
            Lease(path, stale_after=2.0).acquire()
    finally:
        owner.kill()
        owner.wait()


def test_a_killed_owner_on_this_host_is_taken_over_at_once(tmp_path):
    path = tmp_path / "job.lease"
    owner = holder_process(path, stale_after=60.0)
    owner.kill()
    owner.wait()
    start = time.monotonic()
    lease = Lease(path, stale_after=60.0)
    lease.acquire()
    assert time.monotonic() - start < 5  # no waiting for the 60 s heartbeat: the process is known to be gone
    assert current(path).pid == os.getpid() and lease.generation == 2
    lease.release()
    assert Lease(path).generations() == [3] and current(path).released  # a tombstone: generations only grow


def test_an_owner_elsewhere_is_judged_by_its_heartbeat_moving_not_by_clocks(tmp_path):
    path = tmp_path / "job.lease"
    # A holder on another host whose file claims nothing about time: silent for the whole watch, so it is gone.
    path.with_name("job.lease.000007").write_text(json.dumps({"host": "node-b", "pid": 4242, "token": "t", "beat": 3}))
    start = time.monotonic()
    lease = Lease(path, stale_after=1.5)
    lease.acquire()
    assert time.monotonic() - start >= 1.5 and lease.generation == 8 and current(path).host == socket.gethostname()
    lease.release()


def test_the_heartbeat_renews_and_notices_a_takeover(tmp_path):
    path = tmp_path / "job.lease"
    lease = Lease(path, stale_after=1.2)
    lease.acquire()
    first = current(path).beat
    deadline = time.monotonic() + 5
    while current(path).beat == first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert current(path).beat > first  # renewed every stale_after / 6
    lease._file(lease.generation + 1).write_text(json.dumps({"host": "node-c", "pid": 1, "token": "other", "beat": 0}))
    assert lease.lost.wait(timeout=5)
    with pytest.raises(LeaseLost, match="another process took over"):
        lease.check()
    lease.release()
    assert current(path).host == "node-c"  # release never deletes someone else's lease


RACE = """
import os, sys, time
from pathlib import Path
from fmnist.lease import Busy, Lease
os.nice(19)  # starved: the racers run behind whatever else the machine does
path, start = Path(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
lease = Lease(path, stale_after=0.6)
try:
    lease.acquire()
    won = time.time() - (time.monotonic() - lease.renewed)  # when it took the lease, by this process's own clock
    time.sleep(1.0)  # hold it while the others decide
    lease._stop.set()  # then fall silent without releasing: the next round's stale lease
    lease._thread.join()
    valid_until = time.time() - (time.monotonic() - lease.renewed) + lease.stale_after / 2  # when its heartbeat would give up
    print("won", lease.generation, won, valid_until, flush=True)
except Busy:
    print("busy", flush=True)
"""


def test_racing_processes_never_hold_a_lease_at_the_same_instant(tmp_path):
    """Eight starved processes per round race for a stale lease. What matters, from the holders' own timestamps: no two
    are ever live holders at one instant (a holder's claim lasts from taking the lease until its heartbeat would give up,
    half the lease after its last renewal), and each taker made the next generation. A racer that starts late, after the
    round's first winner fell silent, may take over from it: that is a later holder, not a second one at the same time."""
    path = tmp_path / "job.lease"
    path.with_name("job.lease.000001").write_text(json.dumps({"host": "gone", "pid": 1, "token": "x", "beat": 0}))
    held = []
    for _ in range(6):
        start = time.time() + 1.0
        racers = [subprocess.Popen([sys.executable, "-c", RACE, str(path), str(start)], stdout=subprocess.PIPE, text=True)
                  for _ in range(8)]
        answers = [r.communicate(timeout=120)[0].split() for r in racers]
        assert all(a in (["busy"],) or a[0] == "won" for a in answers), answers
        held += [(int(a[1]), float(a[2]), float(a[3])) for a in answers if a[0] == "won"]
    held.sort()
    assert [g for g, _, _ in held] == list(range(2, 2 + len(held)))  # one holder per generation, each the next
    for (_, _, until), (generation, won, _) in zip(held, held[1:]):
        assert won > until, f"generation {generation} was taken at {won:.3f}, while the one before held it until {until:.3f}"


def test_a_paused_owner_cannot_take_back_a_job_finished_meanwhile(tmp_path):
    """The replay of issue 29: A holds generation 1 and pauses between its check and its renewal; B takes generation 2,
    finishes and releases; A's renewal then re-creates its old file. A must still find that it lost the job."""
    path = tmp_path / "job.lease"
    a = Lease(path, stale_after=0.5)
    a.acquire()
    a._stop.set()
    a._thread.join()  # A is paused: its heartbeat stands still
    assert a._still_mine()  # ... right after its check passed
    b = Lease(path, stale_after=0.5)
    b.acquire()  # A's heartbeat did not move for the whole watch
    assert b.generation == 2
    b.release()  # B finished the job
    a._renew()  # A continues: its renewal writes generation 1 again
    assert Lease(path).generations()[-1] == 3 and current(path).released
    with pytest.raises(LeaseLost):
        a.check()


def test_an_owner_paused_past_half_its_lease_distrusts_it_before_anyone_took_over(tmp_path):
    lease = Lease(tmp_path / "job.lease", stale_after=0.4)
    lease.acquire()
    lease._stop.set()
    lease._thread.join()  # no renewals from now on, as if the process were stopped
    time.sleep(0.3)
    with pytest.raises(LeaseLost, match="last renewed"):
        lease.check()  # nobody took the lease, yet this owner must not write on a claim that old


FAILING = """
import errno, os, sys, time
from pathlib import Path
from fmnist.lease import Lease, LeaseLost
lease = Lease(Path(sys.argv[1]), stale_after=1.2)
lease.acquire()
real = os.replace
def full(*args):  # the disk fills up: every renewal fails from now on
    raise OSError(errno.ENOSPC, "No space left on device")
os.replace = full
start = time.monotonic()
while time.monotonic() - start < 10:
    try:
        lease.between_steps()  # what training calls at every step
    except LeaseLost as err:
        print(f"stopped after {time.monotonic() - start:.2f} s: {err}", flush=True)
        sys.exit(0)
    time.sleep(0.02)
print("trained on without a heartbeat", flush=True)
sys.exit(1)
"""


def test_an_owner_whose_renewals_fail_stops_before_anyone_could_take_over(tmp_path):
    path = tmp_path / "job.lease"
    done = subprocess.run([sys.executable, "-c", FAILING, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    seconds = float(done.stdout.split()[2])
    assert seconds < 1.2, "it must stop within the lease, before a taker would judge it gone"
    assert "could not be renewed" in done.stdout and "No space left on device" in done.stdout and "checkpoint is kept" in done.stdout


PAUSED = """
import sys, time
from pathlib import Path
from fmnist.lease import Lease, LeaseLost
lease = Lease(Path(sys.argv[1]), stale_after=1.0)
lease.acquire()
print("held", flush=True)
log = Path(sys.argv[2])
for step in range(1000):
    time.sleep(0.05)
    try:
        lease.between_steps()
        if step % 10 == 9:
            lease.check()  # before a write, as a checkpoint or a metric log does
            with log.open("a") as f:
                f.write(f"{step}\\n")
    except LeaseLost as err:
        print(f"lost: {err}", flush=True)
        sys.exit(0)
"""


def test_an_owner_paused_past_its_lease_writes_nothing_after_it_continues(tmp_path):
    path, log = tmp_path / "job.lease", tmp_path / "writes.log"
    owner = subprocess.Popen([sys.executable, "-c", PAUSED, str(path), str(log)], stdout=subprocess.PIPE, text=True)
    assert owner.stdout.readline().strip() == "held"
    time.sleep(1.2)
    os.kill(owner.pid, signal.SIGSTOP)  # a suspended job, a hung filesystem
    writes_before = log.read_text().count("\n") if log.exists() else 0
    taker = Lease(path, stale_after=1.0)
    taker.acquire()  # its heartbeat stands still for the whole watch: taken over
    taker.release()  # ... and the new owner finishes the job
    os.kill(owner.pid, signal.SIGCONT)
    out, _ = owner.communicate(timeout=30)
    assert "lost:" in out
    assert (log.read_text().count("\n") if log.exists() else 0) == writes_before  # nothing written after it continued
