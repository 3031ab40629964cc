#!/usr/bin/env python3
"""Measures `ironflow serve` on SQLite from process start to the first 200 from /ready.

    cargo build --release && python3 scripts/startup-time.py [--runs 20] [--bin target/release/ironflow]

Each run uses a fresh data directory (so migrations and bootstrap are included) and then a
second start on the same directory (a warm restart). Prints p50 / max for both, in ms.
"""
import argparse, http.client, os, signal, socket, statistics, subprocess, tempfile, time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_ready(binary, data_dir):
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([binary, "serve", "--port", str(port), "--data-dir", data_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/ready")
                if conn.getresponse().status == 200:
                    return (time.perf_counter() - start) * 1000
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            time.sleep(0.0005)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--bin", default="target/release/ironflow")
    args = ap.parse_args()
    cold, warm = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            cold.append(time_to_ready(args.bin, os.path.join(d, "data")))
            warm.append(time_to_ready(args.bin, os.path.join(d, "data")))
    for label, xs in (("first boot (migrate + bootstrap)", cold), ("restart", warm)):
        print(f"{label}: p50 {statistics.median(xs):.1f} ms, max {max(xs):.1f} ms over {len(xs)} runs")


if __name__ == "__main__":
    main()
