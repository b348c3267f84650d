#!/usr/bin/env python3
"""Sends COUNT PUTs to 127.0.0.1:PORT over THREADS keep-alive connections and
exits; fails loudly if any answer is not 2xx. Used by bench-writes.sh."""
import argparse
import http.client
import threading


def worker(port, start, count, errors):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(start, start + count):
        body = f"value-{i}"
        conn.request("PUT", f"/kv/burst{i % 1000}", body=body, headers={"Content-Type": "text/plain"})
        response = conn.getresponse()
        response.read()
        if not 200 <= response.status < 300:
            errors.append(response.status)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    errors = []
    share = args.count // args.threads
    threads = [threading.Thread(target=worker, args=(args.port, t * share, share, errors)) for t in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} writes failed, e.g. {errors[:5]}")


if __name__ == "__main__":
    main()
