"""The lease: one owner per job, taken over when its owner stops heartbeating or is gone."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from fmnist.lease import Busy, Lease, read_holder

HOLD = """
import sys, time
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


def test_a_live_owner_in_another_process_keeps_the_job(tmp_path):
    path = tmp_path / "job.lease"
    owner = holder_process(path)
    try:
        with pytest.raises(Busy, match=rf"already running on host {socket.gethostname()} as process {owner.pid}"):
            Lease(path, stale_after=2.0).acquire()
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
    assert read_holder(path).pid == os.getpid()
    lease.release()
    assert not path.exists()


def test_an_owner_elsewhere_that_stopped_heartbeating_is_taken_over(tmp_path):
    path = tmp_path / "job.lease"
    fresh = {"host": "node-b", "pid": 4242, "token": "t", "heartbeat": time.time()}
    path.write_text(json.dumps(fresh))
    with pytest.raises(Busy, match="already running on host node-b as process 4242"):
        Lease(path, stale_after=5.0).acquire()
    path.write_text(json.dumps(fresh | {"heartbeat": time.time() - 10}))  # silent for 10 s > 5 s
    lease = Lease(path, stale_after=5.0)
    lease.acquire()
    assert read_holder(path).host == socket.gethostname()
    lease.release()


def test_the_heartbeat_keeps_the_lease_fresh_and_notices_a_takeover(tmp_path):
    path = tmp_path / "job.lease"
    lease = Lease(path, stale_after=1.2)
    lease.acquire()
    first = read_holder(path).heartbeat
    deadline = time.monotonic() + 5
    while read_holder(path).heartbeat == first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read_holder(path).heartbeat > first  # renewed every stale_after / 6
    path.write_text(json.dumps({"host": "node-c", "pid": 1, "token": "other", "heartbeat": time.time()}))
    assert lease.lost.wait(timeout=5)
    lease.release()
    assert read_holder(path).host == "node-c"  # release never deletes someone else's lease


def test_a_cut_short_lease_file_counts_as_free(tmp_path):
    path = tmp_path / "job.lease"
    path.write_text('{"host": "no')
    lease = Lease(path, stale_after=60.0)
    lease.acquire()
    assert read_holder(path).token == lease.me.token
    lease.release()
