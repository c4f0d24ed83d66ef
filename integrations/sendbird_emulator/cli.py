"""``python -m integrations.sendbird_emulator``: serve the emulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Sequence

from integrations.sendbird_emulator.app import start_emulator
from integrations.sendbird_emulator.state import DEDUP_MODES, DedupMode


def main(argv: Sequence[str] | None = None) -> None:
    """Run the emulator until interrupted. The API token comes from ``--api-token`` or the environment."""
    parser = argparse.ArgumentParser(prog="python -m integrations.sendbird_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--app-id", default="emulator")
    parser.add_argument(
        "--api-token",
        default=os.environ.get("SENDBIRD_EMULATOR_API_TOKEN"),
        help="the token clients must send (default: $SENDBIRD_EMULATOR_API_TOKEN)",
    )
    parser.add_argument("--webhook-url", default=None, help="where to POST signed webhook events")
    parser.add_argument(
        "--dedup-mode", choices=DEDUP_MODES, default="original", help="the answer to a repeated dedup_id"
    )
    args = parser.parse_args(argv)
    if not args.api_token:
        parser.error("--api-token or SENDBIRD_EMULATOR_API_TOKEN is required")
    asyncio.run(_serve(args.host, args.port, args.app_id, args.api_token, args.webhook_url, args.dedup_mode))


async def _serve(
    host: str,
    port: int,
    app_id: str,
    api_token: str,
    webhook_url: str | None,
    dedup_mode: DedupMode = "original",
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    running = await start_emulator(
        host=host,
        port=port,
        app_id=app_id,
        api_token=api_token,
        webhook_url=webhook_url,
        dedup_mode=dedup_mode,
    )
    try:
        await stop.wait()
    finally:
        await running.close()
