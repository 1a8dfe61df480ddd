"""The Hugging Face hub as this project meets it: found unreachable in a second rather than after retries,
and the errors a missing network gives told apart from real failures (so a bundled offline model may stand
in for a default one, and a user told what to do)."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def hub_offline_if_unreachable(timeout: float = 3.0) -> bool:
    """Switch the Hugging Face hub to offline mode for this process when its host cannot be reached.

    Without this, every default model the run tries on a machine with no network costs about 45 s of
    huggingface_hub retries before it fails; offline mode fails at once (and still loads cached models).
    Returns True when offline.
    """
    import os
    import socket
    from urllib.parse import urlparse

    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE:
        return True
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False  # behind a proxy a direct connection proves nothing; let the hub client try
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return False
    except OSError as err:
        logger.info("%s unreachable (%s): hub offline mode, models come from the local cache only", host, err)
        os.environ["HF_HUB_OFFLINE"] = "1"
        hub.HF_HUB_OFFLINE = True
        return True


def unreachable(err: Exception) -> bool:
    """True for the errors a missing network gives when fetching weights from a hub."""
    text = str(err).lower()
    return isinstance(err, OSError) or any(w in text for w in ("download", "connect", "offline", "resolve"))


OFFLINE_HINT = ", or let the bundled offline models stand in (--offline_fallback true)"


def offline_miss(err: Exception) -> bool:
    """True when `err` is the hub's refusal to download in offline mode (the hub was found unreachable)."""
    import huggingface_hub.constants as hub

    return bool(hub.HF_HUB_OFFLINE) and unreachable(err)
