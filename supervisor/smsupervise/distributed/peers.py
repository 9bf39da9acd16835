"""Wait for every other host's name to resolve, as the toolkit does before any runner.

sagemaker-training retries ``gethostbyname(host)`` with an exponential backoff (100 ms x 2^n, at most
30 s apart) and gives up after 15 minutes (``entry_point._dns_lookup``). Here the hosts are waited
for together, a host that is late gets one ``peer_waiting`` event (and ``peer_resolved`` when it
comes), and one that never resolves ends the run with an error that names it. The lookups run on
the loop's resolver (``getaddrinfo`` in the default executor: name resolution has no non-blocking
interface in the standard library).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from smsupervise.errors import SupervisorError
from smsupervise.streams.events import EventLog

TOOLKIT_LIMIT = 15 * 60.0  # seconds, entry_point._dns_lookup's stop_max_delay
FIRST_WAIT = 0.1  # wait_exponential_multiplier=100 (ms)
LONGEST_WAIT = 30.0  # wait_exponential_max=30000 (ms)

Resolver = Callable[[str], Awaitable[str]]


class PeerUnresolved(SupervisorError):
    """A host of the job never resolved: the job cannot start (exit 1, as the toolkit's failure)."""

    exit_code = 1

    def __init__(self, host: str, waited: float, error: str) -> None:
        self.host = host
        super().__init__(
            f"host {host!r} of resourceconfig.json never resolved ({waited:.0f} s, last error: {error}); "
            "the cluster did not come up: check the job's network (VPC DNS) or resourceconfig.json 'hosts'"
        )


class Backoff(NamedTuple):
    """How long to keep trying and how far apart."""

    limit: float = TOOLKIT_LIMIT
    first: float = FIRST_WAIT
    longest: float = LONGEST_WAIT

    def delay(self, attempt: int) -> float:
        return min(self.first * 2.0**attempt, self.longest)


TOOLKIT_BACKOFF = Backoff()


async def resolve_ipv4(host: str) -> str:
    """``gethostbyname`` on the loop's resolver: the first IPv4 address of ``host``."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, family=socket.AF_INET)
    return str(infos[0][4][0])


async def wait_for_host(host: str, log: EventLog, backoff: Backoff, resolve: Resolver) -> str:
    """The address of ``host``, retrying until ``backoff.limit``; raises ``PeerUnresolved``."""
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            address = await resolve(host)
        except OSError as error:
            waited = time.monotonic() - started
            delay = backoff.delay(attempt)
            if waited + delay > backoff.limit:
                log.error("peer_unresolved", host=host, waited_s=round(waited, 3), error=str(error))
                raise PeerUnresolved(host, waited, str(error)) from None
            if attempt == 0:
                log.warning("peer_waiting", host=host, error=str(error), limit_s=backoff.limit)
            attempt += 1
            await asyncio.sleep(delay)
            continue
        if attempt:
            log.info(
                "peer_resolved", host=host, address=address, waited_s=round(time.monotonic() - started, 3)
            )
        return address


async def wait_for_hosts(
    hosts: Sequence[str], log: EventLog, backoff: Backoff = TOOLKIT_BACKOFF, resolve: Resolver = resolve_ipv4
) -> dict[str, str]:
    """Every host's address, waited for together; the first that never resolves raises."""
    tasks = [asyncio.ensure_future(wait_for_host(host, log, backoff, resolve)) for host in hosts]
    try:
        addresses = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return dict(zip(hosts, addresses, strict=True))


async def wait_for_port(host: str, port: int, log: EventLog, backoff: Backoff) -> None:
    """Until ``host:port`` accepts a TCP connection (the MPI master waits for the workers' sshd)."""
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError as error:
            waited = time.monotonic() - started
            if waited > backoff.limit:
                raise PeerUnresolved(host, waited, f"port {port}: {error}") from None
            if attempt == 0:
                log.info("peer_port_waiting", host=host, port=port, error=str(error))
            await asyncio.sleep(min(backoff.delay(attempt), 1.0))
            attempt += 1
            continue
        writer.close()
        return


async def wait_for_ports(hosts: Sequence[str], port: int, log: EventLog, backoff: Backoff) -> None:
    """Every host's ``port`` accepts connections."""
    await asyncio.gather(*(wait_for_port(host, port, log, backoff) for host in hosts))
