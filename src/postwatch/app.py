"""Composition root: builds the ASGI app and the background services from a config."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp

from postwatch import __version__
from postwatch.config import Config
from postwatch.rooms import Listener, ListenError, Service, rooms
from postwatch.services import Backoff, wait_stop
from postwatch.store import Database, StoreUnavailable

log = logging.getLogger("postwatch")


def _build(config: Config, db: Database) -> tuple[FastAPI, list[Callable[[ASGIApp], ASGIApp]]]:
    """The FastAPI app with every room's routes, and the rooms' ASGI wrappers."""
    app = FastAPI(title="postwatch", version=__version__, docs_url="/api/docs")

    @app.get("/healthz", tags=["ops"])
    def healthz() -> Response:
        try:
            db.ping()
        except StoreUnavailable:
            return JSONResponse({"status": "unavailable", "store": "down"}, status_code=503)
        failing = db.write_failure  # reads work, but the last writes failed (disk full...)
        if failing is not None:
            return JSONResponse(
                {
                    "status": "unavailable",
                    "store": "writes failing",
                    "error": failing.error,
                    "since": failing.since.isoformat(),
                    "failures": failing.count,
                },
                status_code=503,
            )
        return JSONResponse({"status": "ok", "version": __version__})

    @app.get("/metrics", tags=["ops"])
    def metrics() -> Response:
        from postwatch.store.metrics import store_metrics

        return Response(generate_latest() + store_metrics(db), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(_req: Any, _exc: StoreUnavailable) -> Response:
        return JSONResponse(
            {"error": "store unavailable: nothing was stored, please retry"}, status_code=503
        )

    wrappers: list[Callable[[ASGIApp], ASGIApp]] = []
    for room in rooms():
        part = room.http(config, db)
        if part is None:
            continue
        app.include_router(part.router)
        if part.wrap_asgi is not None:
            wrappers.append(part.wrap_asgi)
    return app, wrappers


def create_app(config: Config, db: Database) -> FastAPI:
    """The FastAPI app with every room's routes (without the rooms' ASGI wrappers)."""
    return _build(config, db)[0]


def serving_app(config: Config, db: Database) -> ASGIApp:
    """The ASGI callable uvicorn serves: the app, wrapped by the rooms that offer a wrapper
    (the intake takes its hot path before the framework's routing)."""
    app, wrappers = _build(config, db)
    asgi: ASGIApp = app
    for wrap in wrappers:
        asgi = wrap(asgi)
    return asgi


def build_services(config: Config, db: Database, *, http: bool) -> list[Service]:
    services: list[Service] = []
    for room in rooms():
        services.extend(room.services(config, db))
    return services


async def run(
    config: Config, db: Database, *, http: bool = True, stop: asyncio.Event | None = None
) -> None:
    """Run HTTP (optional) and every background service until SIGTERM/SIGINT, then drain.

    Without a ``stop`` event of the caller's, SIGTERM and SIGINT set one.
    """
    import uvicorn

    _QuietServer = _quiet_server_class()
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)

    services = build_services(config, db, http=http)
    # bind every listen address before anything runs: one that cannot be bound stops start-up
    sock = bind_listen(config.server.host, config.server.port) if http else None
    try:
        for svc in services:
            if isinstance(svc, Listener):
                await svc.listen()
    except BaseException:
        if sock is not None:
            sock.close()
        raise

    tasks: list[asyncio.Task[None]] = []
    server: uvicorn.Server | None = None
    if sock is not None:
        from postwatch.httpguard import build_guard, uvicorn_options

        guard = build_guard(config.server)
        uv_config = uvicorn.Config(
            guard.asgi(serving_app(config, db)),
            host=config.server.host,
            port=config.server.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
            **uvicorn_options(config.server, guard),
        )
        server = _QuietServer(uv_config)
        log.info("postwatch %s listening on http://%s", __version__, config.server.listen)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name="http"))
    for svc in services:
        tasks.append(asyncio.create_task(_guarded(svc, stop), name=svc.name))
    log.info("postwatch %s running: %s", __version__, ", ".join(t.get_name() for t in tasks))

    async def _stopper() -> None:
        assert stop is not None
        await stop.wait()
        log.info("postwatch stopping: finishing the work in hand (sends, stored positions)")
        if server is not None:
            server.should_exit = True

    stopper = asyncio.create_task(_stopper())
    try:
        if tasks:
            done, _pending = await asyncio.wait(
                [*tasks, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            for t in done:
                if t in tasks and t.exception() is not None:
                    log.error("%s stopped with an error", t.get_name(), exc_info=t.exception())
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("postwatch stopped")
    finally:
        stopper.cancel()


def bind_listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``server.listen`` (uvicorn listens on it); ListenError if the
    address is in use or not this machine's."""
    try:
        family, kind, proto, _name, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenError(exc, config_address(host, port), "server.listen") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ListenError(exc, config_address(host, port), "server.listen") from None
    return sock


def config_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _quiet_server_class() -> type:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn without its own signal handlers: postwatch's stop event drives shutdown."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer


async def _guarded(svc: Service, stop: asyncio.Event) -> None:
    """Run a service; if it crashes, log it and start it again after a pause (never silently)."""
    backoff = Backoff(first=1.0, cap=60.0)
    while not stop.is_set():
        try:
            await svc.run(stop)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            delay = backoff.next()
            log.exception("service %s failed; restarting in %.0fs", svc.name, delay)
            await wait_stop(stop, delay)


@contextlib.asynccontextmanager
async def running(config: Config, db: Database) -> AsyncIterator[asyncio.Event]:
    """Run postwatch in the current loop (tests); yields the stop event."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(config, db, stop=stop))
    try:
        yield stop
    finally:
        stop.set()
        await task
