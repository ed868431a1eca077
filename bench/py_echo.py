"""py_echo.py -- the Python asyncio peer of `make bench`, written the usual way
(streams for TCP, a DatagramProtocol for UDP).

    python3 bench/py_echo.py echo|line|udp PORT
"""
import asyncio
import sys

HOST = "127.0.0.1"


async def echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


async def line_echo(reader, writer):
    try:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def main(mode, port):
    if mode == "udp":
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(UdpEcho, local_addr=(HOST, port))
        await asyncio.Event().wait()
    else:
        handler = {"echo": echo, "line": line_echo}[mode]
        server = await asyncio.start_server(handler, HOST, port, backlog=511)
        async with server:
            await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("echo", "line", "udp"):
        sys.exit("usage: python3 py_echo.py echo|line|udp PORT")
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
