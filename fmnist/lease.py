"""One owner per job: a lease file beside the job's checkpoint, renewed by a heartbeat.

The file (`<fingerprint>.lease`) names the host, the process and a random token, and holds the
time of the last heartbeat. A job takes the lease before it trains. Another copy of the job finds
it held and stops, naming the owner, unless the owner stopped heartbeating for `stale_after`
seconds (killed, node lost) or is a process of this host that no longer exists: then it takes the
lease over and resumes the job. Every file is written under a name of its own and renamed into
place, so readers see a whole holder or none; it works wherever the checkpoint folder is shared.
"""

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from fmnist.errors import UserError


class Busy(UserError):
    """A live process holds the lease: this copy of the job must not train."""


class LeaseLost(RuntimeError):
    """Another process took the lease over while this one was training (it had stopped heartbeating)."""


@dataclass
class Holder:
    host: str
    pid: int
    token: str
    heartbeat: float  # time.time() of the last renewal

    def alive_here(self) -> bool:
        """False only for a process of this host that no longer exists."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def read_holder(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):  # a file cut short by a crash: nobody holds it
        return Holder("", 0, "", 0.0)


class Lease:
    def __init__(self, path: Path, stale_after: float = 60.0, settle: float = 0.5, wait: float = 0.0):
        self.path = path
        self.stale_after = stale_after
        self.wait = wait  # how long to wait for a live owner to stop before giving up
        self.settle = settle  # wait after a takeover, then check that nobody else took it at the same moment
        self.me = Holder(socket.gethostname(), os.getpid(), uuid.uuid4().hex, time.time())
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease, or raise Busy naming the live owner (after waiting up to `wait` seconds for it to go)."""
        deadline = time.monotonic() + self.wait
        while True:
            try:
                return self._acquire_once()
            except Busy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(2.0, self.stale_after / 6))

    def _acquire_once(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = self._create()
        except OSError as err:
            raise UserError(f"cannot write in the checkpoint folder {self.path.parent} ({err.strerror}); set checkpoint_dir to a writable folder") from None
        if not created:
            holder = read_holder(self.path)
            if holder is not None and self._live(holder):
                raise Busy(self._busy_message(holder))
            self._write()  # the owner is gone: take over
            time.sleep(self.settle)
            holder = read_holder(self.path)
            if holder is None or holder.token != self.me.token:
                raise Busy(self._busy_message(holder) if holder else f"another process took over {self.path} at the same moment")
        self._thread = threading.Thread(target=self._heartbeat, name="fmnist-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = read_holder(self.path)
        if holder is not None and holder.token == self.me.token:
            self.path.unlink(missing_ok=True)

    def check(self) -> None:
        """Raise LeaseLost if another process has taken the job over."""
        if self.lost.is_set():
            raise LeaseLost(f"another process took over this job's lease {self.path}; this copy stops without touching its run")

    def __enter__(self) -> "Lease":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _live(self, holder: Holder) -> bool:
        return time.time() - holder.heartbeat < self.stale_after and holder.alive_here()

    def _busy_message(self, holder: Holder) -> str:
        age = time.time() - holder.heartbeat
        return (
            f"this job is already running on host {holder.host} as process {holder.pid} (lease {self.path}, heartbeat "
            f"{age:.0f} s ago); this copy does not train. It takes over by itself once that heartbeat is {self.stale_after:.0f} s old"
        )

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self.me), f)
        return True

    def _write(self) -> None:
        self.me.heartbeat = time.time()
        partial = self.path.with_name(f"{self.path.name}.{self.me.host}.{self.me.pid}.{self.me.token}.partial")
        partial.write_text(json.dumps(asdict(self.me)))
        os.replace(partial, self.path)

    def _heartbeat(self) -> None:
        interval = self.stale_after / 6
        while not self._stop.wait(interval):
            holder = read_holder(self.path)
            if holder is None or holder.token != self.me.token:
                self.lost.set()
                return
            self._write()
