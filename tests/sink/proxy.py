"""A loopback TCP proxy that can blackhole traffic (a half-open connection: the peer stays
connected and never answers). Used to show the writer's outer timeouts fire."""

from __future__ import annotations

import asyncio
import contextlib


class BlackholeProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self.blackholed = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._dead: set[asyncio.StreamWriter] = set()  # connections cut while blackholed
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def blackhole(self) -> None:
        self.blackholed = True

    def restore(self) -> None:
        self.blackholed = False  # connections cut meanwhile stay dead, as after a real outage

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.blackholed:
                self._dead.add(writer)
                await reader.read()  # swallow everything, answer nothing
                return
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            await asyncio.gather(self._pipe(reader, up_writer, writer),
                                 self._pipe(up_reader, writer, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    client: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            if self.blackholed or client in self._dead:
                self._dead.add(client)
                continue  # dropped on the floor
            dst.write(data)
            await dst.drain()
        dst.close()
