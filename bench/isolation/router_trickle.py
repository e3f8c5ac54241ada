#!/usr/bin/env python3
"""Isolation under attack, scenario (b): one client trickles request bodies on many router
connections (default 10,000, one byte per `--interval` seconds) to tenant A's router; tenant B is
probed before (quiet phase) and during the attack. Reports B's success rate and p99, the refusals
the routers counted, and the process's RSS. Loopback only; bounded by --connections and
--attack-seconds.

    python3 bench/isolation/router_trickle.py [--binary target/release/bulkhead] \
        [--connections 10000] [--interval 60] [--attack-seconds 60] [--quiet-seconds 15]
"""

import argparse
import asyncio
import time

from router_attack_common import World, default_binary, raise_fd_limit, report


async def trickler(port, interval, stop, opened):
    """One attacking connection through the edge's plain listener: a POST announcing 1 MB, then one
    byte per `interval` until `stop`."""
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    opened[0] += 1
    try:
        w.write(b"POST /upload HTTP/1.1\r\nhost: x.a.test\r\ncontent-length: 1000000\r\n\r\nx")
        await w.drain()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                w.write(b"x")
                await w.drain()
            if r.at_eof():
                break
    except (OSError, ConnectionError):
        pass
    finally:
        w.close()


async def main(args):
    fds = raise_fd_limit()
    world = World(args.binary, args.extra)
    await world.start()
    try:
        quiet = await world.probe_phase(args.quiet_seconds, args.rate)
        rss_quiet = world.rss_mib()
        stop = asyncio.Event()
        opened = [0]
        attackers = []
        for i in range(args.connections):
            attackers.append(asyncio.create_task(trickler(world.http, args.interval, stop, opened)))
            if i % 500 == 499:
                await asyncio.sleep(0.05)
        await asyncio.sleep(2)
        attack = await world.probe_phase(args.attack_seconds, args.rate)
        rss_attack = world.rss_mib()
        refusals = world.metric_lines("bulkhead_router_connections_total")
        limited = world.metric_lines("bulkhead_router_limited_requests_total")
        stop.set()
        await asyncio.wait_for(asyncio.gather(*attackers, return_exceptions=True), 30)
        report({
            "scenario": "router_trickle",
            "fd_limit": fds,
            "attack_connections_opened": opened[0],
            "trickle_interval_s": args.interval,
            "tenant_b_quiet": quiet,
            "tenant_b_under_attack": attack,
            "rss_mib": {"quiet": rss_quiet, "under_attack": rss_attack},
            "router_connection_outcomes": [l for l in refusals if 'tenant="a"' in l],
            "router_limited_requests": limited,
        })
    finally:
        world.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=default_binary())
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--interval", type=float, default=60.0)
    p.add_argument("--quiet-seconds", type=float, default=15.0)
    p.add_argument("--attack-seconds", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=20.0, help="tenant B probes per second")
    p.add_argument("extra", nargs="*", help="extra flags for bulkhead standalone (after --)")
    asyncio.run(main(p.parse_args()))
