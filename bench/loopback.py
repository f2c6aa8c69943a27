"""Helpers the benchmarks share: free loopback ports, and a throwaway sshd on 127.0.0.1."""
import getpass
import os
import shutil
import socket
import subprocess
import time


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
