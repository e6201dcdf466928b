"""Composition root: builds the ASGI app and the background services from a config."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from postwatch import __version__
from postwatch.config import Config
from postwatch.rooms import Service, room_modules
from postwatch.store import Database, StoreUnavailable

log = logging.getLogger("postwatch")


def create_app(config: Config, db: Database) -> FastAPI:
    app = FastAPI(title="postwatch", version=__version__, docs_url="/api/docs")
    app.state.config = config
    app.state.db = db

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

    app.state.routers = {}
    for mod in room_modules("http"):
        router = mod.routes(config, db)
        app.state.routers[mod.__name__.split(".")[1]] = router
        app.include_router(router)
    return app


def asgi_for_serving(app: FastAPI) -> Any:
    """The ASGI callable uvicorn serves: the app, wrapped by rooms that offer ``wrap_asgi``
    (the intake takes its hot path before the framework's routing)."""
    asgi: Any = app
    for mod in room_modules("http"):
        wrap = getattr(mod, "wrap_asgi", None)
        if wrap is not None:
            asgi = wrap(asgi, app)
    return asgi


def build_services(config: Config, db: Database, *, http: bool) -> list[Service]:
    services: list[Service] = []
    for mod in room_modules("service"):
        services.extend(mod.build_services(config, db))
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

    tasks: list[asyncio.Task[None]] = []
    server: uvicorn.Server | None = None
    if http:
        from postwatch.httpguard import build_guard, uvicorn_options

        app = create_app(config, db)
        guard = build_guard(config.server)
        uv_config = uvicorn.Config(
            guard.asgi(asgi_for_serving(app)),
            host=config.server.host,
            port=config.server.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
            **uvicorn_options(config.server, guard),
        )
        server = _QuietServer(uv_config)
        tasks.append(asyncio.create_task(server.serve(), name="http"))
    for svc in build_services(config, db, http=http):
        tasks.append(asyncio.create_task(_guarded(svc, stop), name=svc.name))
    log.info("postwatch %s running: %s", __version__, ", ".join(t.get_name() for t in tasks))

    async def _stopper() -> None:
        assert stop is not None
        await stop.wait()
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
    finally:
        stopper.cancel()


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
    delay = 1.0
    while not stop.is_set():
        try:
            await svc.run(stop)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("service %s failed; restarting in %.0fs", svc.name, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, 60.0)


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
