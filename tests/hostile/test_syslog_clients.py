"""Issue 11 item 4: a flood of TCP connections to the syslog listener is capped."""

from __future__ import annotations

import asyncio

from postwatch.watch.syslog import SyslogListener, SyslogMessage


async def test_tcp_clients_past_the_cap_are_closed_and_the_others_still_heard() -> None:
    got: list[SyslogMessage] = []
    lst = SyslogListener("127.0.0.1:0", lambda m, p: got.append(m), max_tcp_clients=5)
    await lst.start()
    assert lst.tcp_port
    conns = []
    try:
        for _ in range(5):
            conns.append(await asyncio.open_connection("127.0.0.1", lst.tcp_port))
        await asyncio.sleep(0.2)
        extra_r, extra_w = await asyncio.open_connection("127.0.0.1", lst.tcp_port)
        assert await asyncio.wait_for(extra_r.read(10), timeout=5) == b""  # closed at once
        extra_w.close()
        _r, w = conns[0]
        w.write(b"<22>Nov  9 08:07:06 mx2 postfix/lmtp[7]: still heard\n")
        await w.drain()
        for _ in range(250):
            if got:
                break
            await asyncio.sleep(0.02)
        assert [m.msg for m in got] == ["still heard"]
        assert lst.refused_clients == 1
    finally:
        for _r, w in conns:
            w.close()
        await lst.close()
