"""One owner per job: numbered lease files beside the job's checkpoint, renewed by a heartbeat.

The lease of a job is the highest-numbered of its files `<fingerprint>.lease.<generation>`. Each file
names its holder (host, process, a random token) and a heartbeat counter. A job takes the lease by
creating the next generation's file: written in full under a name of its own, then hard-linked into
place, which fails if that generation exists, so of any number of processes racing for one lease
exactly one gets it. A holder only ever rewrites its own generation's file, so an owner that was
paused (SIGSTOP, a suspended Slurm job, a hung filesystem) and continues cannot overwrite the lease
of the process that took over meanwhile: it finds a newer generation and stops.

Whether a holder is gone is judged without comparing clocks across hosts: the taker watches the
holder's heartbeat counter for `stale_after` seconds of its own clock, and takes over only if it did
not move (or at once if the holder is a process of this host that no longer exists, or released the
lease). The heartbeat retries a failed renewal; if it has not renewed for half of `stale_after` it
marks the lease lost, and the owner stops at its next step with its checkpoint kept, before another
process could judge it gone. The owner checks the files again before every checkpoint, metric log
and finish (`check`), and refuses to write once its last renewal is older than half the lease even if
nobody has taken over yet: an owner paused past its lease cannot act on a stale belief.

Generations only grow. Releasing a lease writes a *tombstone*, the next generation marked released, so
an owner paused between its check and its renewal that then re-creates its old generation's file (the
renewal replaces the file whole) still finds a newer generation above it: a finished job's lease can
never be taken back.
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
    """This process no longer holds the job's lease (taken over, or its heartbeat could not be renewed)."""


RELEASED = "released"  # the token of a tombstone generation


@dataclass
class Holder:
    host: str
    pid: int
    token: str
    beat: int = 0  # renewals so far: a taker watches it move

    @property
    def released(self) -> bool:
        return self.token == RELEASED

    def alive_here(self) -> bool:
        """False only for a process of this host that no longer exists."""
        if self.host != socket.gethostname():
            return True
        return process_alive(self.pid)


def process_alive(pid: int) -> bool:
    """False only when no process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    def __init__(self, path: Path, stale_after: float = 60.0, wait: float = 0.0):
        self.path = path  # <folder>/<fingerprint>.lease: the generations are <that>.<number>
        self.stale_after = stale_after
        self.wait = wait  # how long to keep trying while a live owner holds it
        self.me = Holder(socket.gethostname(), os.getpid(), uuid.uuid4().hex)
        self.generation: int | None = None
        self.renewed = 0.0  # time.monotonic() of this holder's last renewal (or taking it)
        self.lost = threading.Event()
        self.reason = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----- the files -----

    def _file(self, generation: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{generation:06d}")

    def generations(self) -> list[int]:
        prefix = f"{self.path.name}."
        found = []
        for entry in self.path.parent.glob(f"{self.path.name}.*"):
            suffix = entry.name[len(prefix):]
            if suffix.isdigit():
                found.append(int(suffix))
        return sorted(found)

    def _read(self, generation: int) -> Holder | None:
        """The holder of one generation; None if the file is gone or unreadable (a taker then watches it like a silent one)."""
        try:
            return Holder(**json.loads(self._file(generation).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _write_new(self, generation: int, holder: Holder | None = None) -> bool:
        """Create `generation`'s file with this holder (or `holder`) in it, whole; False if it already exists."""
        return self._put(generation, holder or self.me, os.link)

    def _renew(self) -> None:
        self.me.beat += 1
        self._put(self.generation, self.me, os.replace)
        self.renewed = time.monotonic()

    def _put(self, generation: int, holder: Holder, place) -> bool:
        """Write `holder` under a name of its own, then `place` it (link: only if new; replace: whole, over the old)."""
        temporary = self.path.with_name(f"{self.path.name}.{self.me.token}.partial")
        try:
            temporary.write_text(json.dumps(asdict(holder)))
            place(temporary, self._file(generation))
            return True
        except FileExistsError:
            return False
        finally:
            temporary.unlink(missing_ok=True)  # a write that failed (a full disk) leaves nothing behind

    def _still_mine(self) -> bool:
        found = self.generations()
        if not found or found[-1] != self.generation:
            return False
        holder = self._read(self.generation)
        return holder is not None and holder.token == self.me.token

    # ----- taking it -----

    def acquire(self) -> None:
        """Take the lease, or raise Busy naming the live owner (after trying for up to `wait` seconds)."""
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
            found = self.generations()
            current = found[-1] if found else 0
            if current:
                self._wait_out(current)
            if not self._write_new(current + 1):
                raise Busy(f"another process took over this job's lease {self.path} at the same moment; this copy does not train")
        except OSError as err:
            raise UserError(f"cannot write in the checkpoint folder {self.path.parent} ({err.strerror or err}); "
                            "set checkpoint_dir to a writable folder") from None
        self.generation = current + 1
        self.renewed = time.monotonic()
        for old in found:  # generations before ours are history (a tombstone too)
            self._file(old).unlink(missing_ok=True)
        self._thread = threading.Thread(target=self._heartbeat, name="fmnist-lease", daemon=True)
        self._thread.start()

    def _wait_out(self, generation: int) -> None:
        """Return when `generation`'s holder is gone; raise Busy if it shows it is alive, or someone else takes over."""
        holder = self._read(generation)
        if holder is not None and (holder.released or not holder.alive_here()):
            return
        seen = self._file_state(generation)
        if seen is None:
            return  # released between our look and our read
        deadline = time.monotonic() + self.stale_after
        while time.monotonic() < deadline:
            time.sleep(min(0.25, self.stale_after / 12))
            newest = self.generations()
            if newest and newest[-1] > generation:
                raise Busy(f"another process took over this job's lease {self.path} while this copy waited; it does not train")
            now = self._file_state(generation)
            if now is None:
                return  # its holder released it
            if now != seen:
                raise Busy(self._busy_message(self._read(generation)))

    def _file_state(self, generation: int) -> str | None:
        try:
            return self._file(generation).read_text()
        except OSError:
            return None

    def _busy_message(self, holder: Holder | None) -> str:
        who = f"host {holder.host} as process {holder.pid}" if holder else "another process"
        return (
            f"this job is already running on {who} (lease {self.path}: its heartbeat went on while this copy watched); "
            f"this copy does not train. It takes over by itself once that heartbeat stops for {self.stale_after:.0f} s"
        )

    # ----- holding it -----

    def _heartbeat(self) -> None:
        interval = min(self.stale_after / 6, 2.0)  # a copy watching sees it move within seconds
        renewed = time.monotonic()
        try:
            while not self._stop.wait(interval):
                try:
                    if not self._still_mine():
                        return self._lose(f"another process took over this job's lease {self.path}")
                    self._renew()
                    renewed = time.monotonic()
                except OSError as err:
                    silent = time.monotonic() - renewed
                    if silent > self.stale_after / 2:
                        return self._lose(f"the lease {self.path} could not be renewed for {silent:.0f} s ({err.strerror or err})")
        except BaseException as err:  # whatever ends this thread ends the ownership: never a silent owner
            self._lose(f"the lease's heartbeat stopped ({type(err).__name__}: {err})")

    def _lose(self, reason: str) -> None:
        self.reason = reason
        self.lost.set()

    def between_steps(self) -> None:
        """The cheap test at every training step: raise LeaseLost if the heartbeat gave up or saw a takeover."""
        if self.lost.is_set():
            raise LeaseLost(f"{self.reason}; this copy stops without touching its run (its checkpoint is kept)")

    def check(self) -> None:
        """Raise LeaseLost unless this process still holds the lease: the files are read again, and a lease whose last
        renewal is older than half `stale_after` (this process was paused, or its heartbeat starved) is not trusted."""
        silent = time.monotonic() - self.renewed
        if not self.lost.is_set() and silent > self.stale_after / 2:
            self._lose(f"the lease {self.path} was last renewed {silent:.1f} s ago (this process was paused or starved)")
        if not self.lost.is_set():
            try:
                mine = self._still_mine()
            except OSError as err:
                mine = False
                self._lose(f"the lease {self.path} could not be read ({err.strerror or err})")
            if not mine and not self.lost.is_set():
                self._lose(f"another process took over this job's lease {self.path}")
        if self.lost.is_set():
            raise LeaseLost(f"{self.reason}; this copy stops without touching its run (its checkpoint is kept)")

    def release(self) -> None:
        """Stop the heartbeat and, if the lease is still this process's, end it with a tombstone (the next generation,
        marked released) and remove the generations below it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if self.generation is not None and self._still_mine():
                tombstone = Holder(self.me.host, self.me.pid, RELEASED, self.me.beat)
                try:
                    written = self._write_new(self.generation + 1, tombstone)
                except OSError:  # no room for it (a full disk): end the lease by removing it
                    written = True
                for generation in self.generations() if written else ():
                    if generation <= self.generation:
                        self._file(generation).unlink(missing_ok=True)
        except OSError:
            pass  # a lease left behind is taken over like a silent one

    def __enter__(self) -> "Lease":
        if self.generation is None:  # not taken yet
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
