"""Helpers the benchmarks share: free loopback ports, a throwaway sshd on 127.0.0.1, and the
cleanup of what a benchmark started."""
import atexit
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time


class Leftovers:
    """What a benchmark started and made (processes, temp dirs, open sockets), undone on every
    exit: a normal end, an error, Ctrl-C or SIGTERM."""

    def __init__(self):
        self.processes = []
        self.dirs = []
        self.sockets = []
        atexit.register(self.cleanup)
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))

    def cleanup(self):
        """Closes the sockets, stops the processes, removes the dirs; safe to call twice."""
        while self.sockets:
            self.sockets.pop().close()
        while self.processes:
            proc = self.processes.pop()
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        while self.dirs:
            shutil.rmtree(self.dirs.pop(), ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")



class Sshd:
    """A throwaway sshd on 127.0.0.1 with key authentication for the current user."""

    def __init__(self, work):
        self.dir = os.path.join(work, "ssh")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.host_key = os.path.join(self.dir, "host_ed25519")
        self.user_key = os.path.join(self.dir, "user_ed25519")
        for key in (self.host_key, self.user_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        authorized = os.path.join(self.dir, "authorized_keys")
        shutil.copy(self.user_key + ".pub", authorized)
        config = os.path.join(self.dir, "sshd_config")
        with open(config, "w") as f:
            f.write(
                f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {self.host_key}\n"
                f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
                f"StrictModes no\nUsePAM no\nPidFile {self.dir}/sshd.pid\n"
                "Subsystem sftp internal-sftp\n"
            )
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen([shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", config],
                                     stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def options(self):
        return ["-i", self.user_key, "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]

    def target(self):
        return f"{getpass.getuser()}@127.0.0.1"

    def scp_command(self, src, dst):
        return ["scp", "-q", "-P", str(self.port)] + self.options() + [src, f"{self.target()}:{dst}"]

    def ssh_command(self, *remote):
        return ["ssh", "-p", str(self.port)] + self.options() + [self.target(), *remote]

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
