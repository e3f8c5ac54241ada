#!/usr/bin/env python3
"""Isolation under attack, scenario (c): tenant A's clients flood its router with HTTP/2 streams
that open every flow-control window and never read, for responses of 4 MiB; tenant B is probed
before (quiet phase) and during the attack. Reports B's success rate and p99, the process's RSS
(quiet, peak under attack) and the streams the router refused. Loopback only; bounded by
--connections, --streams and --attack-seconds.

    python3 bench/isolation/router_h2_flood.py [--binary target/release/bulkhead] \
        [--connections 50] [--streams 100] [--attack-seconds 30] [--quiet-seconds 15]
"""

import argparse
import asyncio
import struct

from router_attack_common import World, default_binary, raise_fd_limit, report

MAX_WINDOW = 0x7FFFFFFF


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def flood_bytes(authority, streams):
    """Preface, windows opened to the maximum, then `streams` GETs for /big (HPACK by hand)."""
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    out += frame(0x4, 0, 0, struct.pack(">HI", 0x4, MAX_WINDOW))
    out += frame(0x8, 0, 0, struct.pack(">I", MAX_WINDOW - 65535))
    block = bytes([0x82, 0x87, 0x04, 4]) + b"/big" + bytes([0x01, len(authority)]) + authority.encode()
    for i in range(streams):
        out += frame(0x1, 0x5, 1 + 2 * i, block)
    return out


async def flooder(world, streams, stop):
    """One non-reading HTTP/2 connection to tenant A; held open until `stop`."""
    try:
        _, w = await asyncio.open_connection(
            "127.0.0.1", world.https, ssl=world.ssl_context(["h2"]), server_hostname="x.a.test")
        w.write(flood_bytes("x.a.test", streams))
        await asyncio.wait_for(w.drain(), 10)
        await stop.wait()
        w.transport.abort()
    except (OSError, asyncio.TimeoutError):
        pass


async def main(args):
    fds = raise_fd_limit()
    world = World(args.binary, args.extra)
    await world.start()
    try:
        quiet = await world.probe_phase(args.quiet_seconds, args.rate)
        rss_quiet = world.rss_mib()
        stop = asyncio.Event()
        attackers = [asyncio.create_task(flooder(world, args.streams, stop))
                     for _ in range(args.connections)]
        peak = [rss_quiet]

        async def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], world.rss_mib() or 0)
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        attack = await world.probe_phase(args.attack_seconds, args.rate)
        limited = world.metric_lines("bulkhead_router_limited_requests_total")
        stop.set()
        await sampler
        await asyncio.wait_for(asyncio.gather(*attackers, return_exceptions=True), 30)
        report({
            "scenario": "router_h2_flood",
            "fd_limit": fds,
            "attack": {"connections": args.connections, "streams_per_connection": args.streams,
                       "response_bytes": 4 * 1024 * 1024},
            "tenant_b_quiet": quiet,
            "tenant_b_under_attack": attack,
            "rss_mib": {"quiet": rss_quiet, "peak_under_attack": peak[0]},
            "router_limited_requests": limited,
        })
    finally:
        world.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=default_binary())
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--quiet-seconds", type=float, default=15.0)
    p.add_argument("--attack-seconds", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=20.0, help="tenant B probes per second")
    p.add_argument("extra", nargs="*", help="extra flags for bulkhead standalone (after --)")
    asyncio.run(main(p.parse_args()))
