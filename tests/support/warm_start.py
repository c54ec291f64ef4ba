"""Processes of their own, started warm: ``python -c <code>`` and ``python -m <module>``
as forks of an interpreter that has already imported Alembic, SQLAlchemy, SQLModel and
psycopg.

A deployer the tests signal, kill or run four at once has to be a process of its own,
with its own pid, output and exit status. Started anew, each paid ~0.5 s of CPU for
those imports before it did anything (with the review's renders, the suite's ~17
processes of that kind were a tenth of its CPU). Forked from
a launcher that imported them (and nothing of this project: each process imports the
models, migrations and machinery of the directory it starts in, as a fresh one does), it
is the same process from the first line of its code on: its own pid, signals delivered
to it, its streams at file descriptors 0-2, the environment and working directory
given, a traceback and status 1 for an uncaught exception, death by SIGINT for an
uncaught Ctrl-C, as the interpreter does. Its parent is the launcher, which reports its
exit status; :class:`WarmProcess` waits for it as :class:`subprocess.Popen` does.
(:mod:`tests.support.alembic_batch` runs commands that need none of that, several to a
process, with their output captured.)
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any

#: The launcher. Its own streams are never written: a child's are its test's pipes.
_LAUNCHER = r"""
import json, logging, os, runpy, selectors, signal, socket, sys, traceback
import alembic.autogenerate, alembic.command, alembic.config, psycopg, sqlalchemy, sqlmodel

channel = socket.socket(fileno=int(sys.argv[1]))
woken, wake = os.pipe()
os.set_blocking(woken, False)
os.set_blocking(wake, False)
signal.set_wakeup_fd(wake)
signal.signal(signal.SIGCHLD, lambda signum, frame: None)


def said(exception):
    # As the interpreter prints it: from the code's own frames, not this one's.
    traceback.print_exception(type(exception), exception, exception.__traceback__.tb_next)


def become(request, streams):
    # What a fresh `python -c`/`python -m` has: the given directory, environment, argv
    # and path, its streams at 0-2, no other descriptor, default signal handling.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(streams[0], 1)
    os.dup2(streams[1], 2)
    os.closerange(3, 65536)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.dont_write_bytecode = bool(request["env"].get("PYTHONDONTWRITEBYTECODE"))
    option, target, *arguments = request["argv"]
    code = 0
    try:
        if option == "-c":
            sys.argv = ["-c", *arguments]
            sys.path[0] = ""
            exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
        else:
            # What `python -m` itself calls: the same frames in a traceback.
            sys.argv = ["-m", *arguments]
            sys.path[0] = os.getcwd()
            runpy._run_module_as_main(target)
    except SystemExit as exit_:
        if exit_.code is None:
            code = 0
        elif isinstance(exit_.code, int):
            code = exit_.code
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt as interrupt:
        said(interrupt)
        sys.stderr.flush()
        logging.shutdown()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException as exception:
        said(exception)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    logging.shutdown()
    os._exit(code)


def tell(message):
    try:
        channel.send(json.dumps(message).encode())
    except OSError:  # the test process is gone
        os._exit(0)


selector = selectors.DefaultSelector()
selector.register(channel, selectors.EVENT_READ, "request")
selector.register(woken, selectors.EVENT_READ, "exited")
while True:
    for key, _ in selector.select():
        if key.data == "request":
            message, streams, _, _ = socket.recv_fds(channel, 1 << 20, 2)
            if not message:
                os._exit(0)
            request = json.loads(message)
            pid = os.fork()
            if pid == 0:
                become(request, streams)
            for stream in streams:
                os.close(stream)
            tell({"id": request["id"], "pid": pid})
        else:
            while True:
                try:
                    os.read(woken, 4096)
                except BlockingIOError:
                    break
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                tell({"exited": pid, "status": status})
"""


class _Launcher:
    """The launcher of one test process, and what it has said."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(theirs.fileno())], pass_fds=[theirs.fileno()]
        )
        theirs.close()
        self.channel = ours
        self.said = threading.Condition()
        self.started: dict[int, int] = {}
        self.statuses: dict[int, int] = {}
        self.gone = False
        self.sending = threading.Lock()
        self.requests = 0
        threading.Thread(target=self._listen, name="warm-start", daemon=True).start()
        atexit.register(self.process.kill)

    def _listen(self) -> None:
        while message := self.channel.recv(1 << 16):
            said = json.loads(message)
            with self.said:
                if "exited" in said:
                    self.statuses[said["exited"]] = said["status"]
                else:
                    self.started[said["id"]] = said["pid"]
                    # An earlier process's status under the same pid, if never asked for.
                    self.statuses.pop(said["pid"], None)
                self.said.notify_all()
        with self.said:
            self.gone = True
            self.said.notify_all()

    def start(
        self, argv: Sequence[str], cwd: str, env: Mapping[str, str], streams: list[int]
    ) -> int:
        with self.sending:
            self.requests += 1
            request = {"id": self.requests, "argv": list(argv), "cwd": cwd, "env": dict(env)}
            socket.send_fds(self.channel, [json.dumps(request).encode()], streams)
        with self.said:
            self.said.wait_for(lambda: request["id"] in self.started or self.gone, timeout=60)
            if request["id"] not in self.started:
                raise RuntimeError("the warm launcher did not start the process")
            return self.started.pop(request["id"])

    def status(self, pid: int, timeout: float | None) -> int | None:
        with self.said:
            self.said.wait_for(lambda: pid in self.statuses or self.gone, timeout=timeout)
            if pid in self.statuses:
                return os.waitstatus_to_exitcode(self.statuses.pop(pid))
            if self.gone:
                raise RuntimeError(f"the warm launcher died before process {pid} ended")
            return None


_lock = threading.Lock()
_launcher: _Launcher | None = None


def _started() -> _Launcher:
    global _launcher  # noqa: PLW0603  (one launcher per test process, started on first use)
    with _lock:
        if _launcher is None or _launcher.gone:
            _launcher = _Launcher()
        return _launcher


class WarmProcess:
    """A process the launcher started: what the tests use of :class:`subprocess.Popen`."""

    def __init__(
        self, launcher: _Launcher, args: list[str], pid: int, stdout: IO[str], stderr: IO[str]
    ) -> None:
        self._launcher = launcher
        self.args = args
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self._status(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._status(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def _status(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            self.returncode = self._launcher.status(self.pid, timeout)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """What is left of its output once it has ended."""
        self.wait(timeout)
        return self.stdout.read(), self.stderr.read()


def _command(command: Sequence[str]) -> list[str]:
    """``[sys.executable, "-c", code, ...]`` or ``[sys.executable, "-m", module, ...]``
    as the launcher takes it."""
    executable, option, *rest = command
    if executable != sys.executable or option not in ("-c", "-m") or not rest:
        raise ValueError(f"not a python -c or -m command: {list(command)[:3]}")
    return [option, *rest]


def popen(
    command: Sequence[str],
    *,
    cwd: os.PathLike[str] | str,
    env: Mapping[str, str],
    stdout: int = subprocess.PIPE,
    stderr: int = subprocess.PIPE,
    text: bool = True,
    **unexpected: Any,
) -> WarmProcess:
    """:class:`subprocess.Popen` of `command` (``python -c`` or ``-m``) with its output
    in pipes, started warm."""
    if stdout != subprocess.PIPE or stderr != subprocess.PIPE or not text or unexpected:
        raise ValueError("a warm process has its output in text pipes and nothing else")
    argv = _command(command)
    launcher = _started()
    pipes = [os.pipe(), os.pipe()]
    try:
        pid = launcher.start(argv, os.fspath(cwd), env, [write for _, write in pipes])
    finally:
        for _, write in pipes:
            os.close(write)
    out, err = (os.fdopen(read, encoding="utf-8", errors="replace") for read, _ in pipes)
    return WarmProcess(launcher, list(command), pid, out, err)


def run(
    command: Sequence[str],
    *,
    cwd: os.PathLike[str] | str,
    env: Mapping[str, str],
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """:func:`subprocess.run` of `command` (``python -c`` or ``-m``), its output captured,
    started warm."""
    process = popen(command, cwd=cwd, env=env)
    said: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda name=name, s=stream: said.__setitem__(name, s.read()))
        for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))
    ]
    for reader in readers:
        reader.start()
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    finally:
        for reader in readers:
            reader.join(timeout)
        process.stdout.close()
        process.stderr.close()
    return subprocess.CompletedProcess(list(command), code, said["stdout"], said["stderr"])
