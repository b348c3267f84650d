#!/usr/bin/env python3
"""Opens COUNT keep-alive connections to 127.0.0.1:PORT, makes one GET on each,
keeps them all open and idle, prints 'ready', then waits until killed.
Used by bench.sh to measure the memory a proxy holds per idle client connection.

--sequential makes the requests one after another instead of all at once."""
import argparse
import asyncio
import sys


async def one(port, semaphore):
    async with semaphore:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        return writer


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--sequential", action="store_true")
    args = parser.parse_args()
    semaphore = asyncio.Semaphore(1 if args.sequential else 512)
    writers = await asyncio.gather(*(one(args.port, semaphore) for _ in range(args.count)))
    print("ready", len(writers), flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
