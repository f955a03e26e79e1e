"""The checkout as a user meets it: the README's commands, and free ports for the servers the tests start."""

from __future__ import annotations

import re
import socket

from support import ROOT


def readme_commands() -> list[str]:
    """The set-up commands README.md opens with, in order."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
