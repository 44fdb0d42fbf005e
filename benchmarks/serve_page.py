"""The service's web page in a real browser: headless Chromium (Debian's `chromium`, or CHROMIUM=path) loads the
page, picks the machine, uploads a clip through the page's file input, reads the score the page shows and saves
a screenshot. Driven over the DevTools protocol (aiohttp's websocket client, which Ray's dashboard already needs).

    rcmae serve --checkpoint runs/main/finetune/model &
    python benchmarks/serve_page.py --url http://127.0.0.1:8000/ --clip CLIP.wav --machine fan/00 --out page.png

Prints `score S decision D` as the page shows them; exits 1 when the page shows an error instead.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp


def browser() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise SystemExit("no Chromium: install Debian's `chromium` (apt-get install chromium) or set CHROMIUM")
    return found


class DevTools:
    """One page's DevTools session: `call` sends a command and waits for its answer."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse):
        self.socket, self.ids = socket, itertools.count(1)

    async def call(self, method: str, **params) -> dict:
        request = next(self.ids)
        await self.socket.send_json(dict(id=request, method=method, params=params))
        while True:
            message = json.loads((await self.socket.receive()).data)
            if message.get("id") == request:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def value(self, expression: str):
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return answer["result"].get("value")

    async def wait_for(self, expression: str, seconds: float, what: str):
        deadline = time.time() + seconds
        while not (value := await self.value(expression)):
            if time.time() > deadline:
                raise RuntimeError(f"the page did not show {what} in {seconds:.0f} s")
            await asyncio.sleep(0.2)
        return value


async def check_page(url: str, clip: Path, machine: str | None, out: Path, token: str | None = None,
                     seconds: float = 60) -> dict:
    """{"score", "decision", "verdict"} as the page shows them after uploading `clip`; the screenshot in `out`."""
    with tempfile.TemporaryDirectory() as profile:
        process = subprocess.Popen([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                    "--window-size=1000,900", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                                    "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.time() + 30
            while not (port_file.exists() and port_file.read_text().strip()):
                if time.time() > deadline or process.poll() is not None:
                    raise RuntimeError("Chromium did not start its DevTools server")
                await asyncio.sleep(0.2)
            port = int(port_file.read_text().split()[0])
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as answer:
                    target = next(t for t in await answer.json() if t["type"] == "page")
                async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                    page = DevTools(socket)
                    await page.call("Page.navigate", url=url)
                    await page.wait_for("document.getElementById('machine')?.options.length > 0", seconds,
                                        "the model's machines")
                    if machine:
                        await page.value(f"document.getElementById('machine').value = {json.dumps(machine)}")
                    if token:  # typed into the page's token field, as a user does
                        await page.value(f"document.getElementById('token').value = {json.dumps(token)}")
                    root = (await page.call("DOM.getDocument"))["root"]["nodeId"]
                    node = (await page.call("DOM.querySelector", nodeId=root, selector="#file"))["nodeId"]
                    await page.call("DOM.setFileInputFiles", nodeId=node, files=[str(clip.resolve())])
                    await page.wait_for("document.getElementById('score') !== null || "
                                        "document.getElementById('verdict').className === 'error'", seconds,
                                        "a score or an error")
                    shown = await page.value("({score: document.getElementById('score')?.textContent, "
                                             "decision: document.getElementById('decision')?.textContent, "
                                             "verdict: document.getElementById('verdict').textContent})")
                    await asyncio.sleep(0.3)  # the canvases are drawn right after the verdict
                    picture = await page.call("Page.captureScreenshot", format="png")
                    out.write_bytes(base64.b64decode(picture["data"]))
                    return shown
        finally:
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/")
    parser.add_argument("--clip", type=Path, required=True)
    parser.add_argument("--machine", help="type/ID to pick in the page (default: the first)")
    parser.add_argument("--out", type=Path, default=Path("page.png"))
    parser.add_argument("--token-file", type=Path, help="the service's token file (rcmae serve --token-file)")
    args = parser.parse_args()
    token = args.token_file.read_text().strip() if args.token_file else None
    shown = asyncio.run(check_page(args.url, args.clip, args.machine, args.out, token))
    print(f"wrote {args.out}", file=sys.stderr)
    if shown["score"] is None:
        print(f"the page shows: {shown['verdict']}", file=sys.stderr)
        raise SystemExit(1)
    print(f"score {shown['score']} decision {shown['decision']}")


if __name__ == "__main__":
    main()
