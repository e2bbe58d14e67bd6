"""The container this process runs in, as the Datadog agent identifies it for tagging.

Read from ``/proc/self/cgroup`` the way dd-trace-py 4.16 reads it
(``ddtrace/internal/runtime/container.py``): each line is ``id:controllers:path``; the
last path segment may end in a container id (64 hex digits, a UUID, or an ECS task id
``<32 hex>-<digits>``), optionally wrapped in ``docker-….scope``/``cri-containerd-….scope``.
Without an id (cgroup v2 with a private cgroup namespace: ``0::/``), the agent resolves
the inode of this process's cgroup node instead.

Headers, as dd-trace-py sends them: ``Datadog-Container-ID: <id>`` and
``Datadog-Entity-ID: ci-<id>``; else ``Datadog-Entity-ID: in-<inode>``; plus
``Datadog-External-Env`` from ``DD_EXTERNAL_ENV`` (set by the agent's admission
controller). Outside a container none is sent: unlike dd-trace-py, the inode is used only
when the cgroup namespace is not the host's (the rule of libdatadog and the agent: a
host cgroup names no container).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

CGROUP_FILE = "/proc/self/cgroup"
CGROUP_MOUNT = "/sys/fs/cgroup"
CGROUP_NAMESPACE = "/proc/self/ns/cgroup"
#: The inode of the host's (initial) cgroup namespace (linux include/linux/proc_ns.h).
HOST_CGROUP_NAMESPACE_INODE = 0xEFFFFFFB

CONTAINER_ID_HEADER = "Datadog-Container-ID"
ENTITY_ID_HEADER = "Datadog-Entity-ID"
EXTERNAL_ENV_HEADER = "Datadog-External-Env"
EXTERNAL_ENV_VAR = "DD_EXTERNAL_ENV"

_UUID = (
    r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
    r"|[0-9a-f]{8}(?:-[0-9a-f]{4}){4}$"  # PCF/Garden
)
_LINE = re.compile(r"^(\d+):([^:]*):(.+)$")
_CONTAINER = re.compile(rf"(?:.+)?({_UUID}|[0-9a-f]{{64}}|[0-9a-f]{{32}}-\d+)(?:\.scope)?$")
#: A header value must stay one printable line: anything else would fail every request.
_HEADER_VALUE = re.compile(r"^[\x21-\x7e][\x20-\x7e]*$")


def container_id_of(line: str) -> str | None:
    """The container id at the end of one cgroup line's path, if there is one."""
    match = _LINE.match(line.strip())
    if match is None:
        return None
    last = match.group(3).rsplit("/", 1)[-1]
    found = _CONTAINER.match(last)
    return found.group(1) if found else None


def _node_path(lines: list[str], mount: str) -> str | None:
    """This process's cgroup node: the v2 line (``0::path``), else v1's memory one."""
    v1 = None
    for line in lines:
        match = _LINE.match(line.strip())
        if match is None:
            continue
        hier, controllers, path = match.groups()
        if hier == "0" and controllers == "":
            return os.path.join(mount, path.strip("/"))
        if "memory" in controllers.split(",") and v1 is None:
            v1 = os.path.join(mount, "memory", path.strip("/"))
    return v1


def _in_host_namespace(namespace: str) -> bool:
    try:
        return os.stat(namespace).st_ino == HOST_CGROUP_NAMESPACE_INODE
    except OSError:
        return True  # no cgroup namespaces here (old kernel, not Linux): no container to name


def container_headers(
    cgroup_file: str | None = None,
    mount: str | None = None,
    namespace: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container/entity headers for this process; empty outside a container.
    Paths left out are the module's (read when called, so a test can point them at
    sample files). Never raises: an unreadable cgroup file means no header."""
    try:
        return _headers(
            cgroup_file or CGROUP_FILE,
            mount or CGROUP_MOUNT,
            namespace or CGROUP_NAMESPACE,
            os.environ if environ is None else environ,
        )
    except Exception:  # a path with a NUL byte, an odd /proc: no header, no failure
        return {}


def _headers(
    cgroup_file: str, mount: str, namespace: str, environ: Mapping[str, str]
) -> dict[str, str]:
    headers: dict[str, str] = {}
    try:
        with open(cgroup_file, encoding="utf-8", errors="replace") as fh:
            lines = fh.read(64 * 1024).splitlines()
    except OSError:
        lines = []
    cid = next((c for c in map(container_id_of, lines) if c), None)
    if cid is not None:
        headers[CONTAINER_ID_HEADER] = cid
        headers[ENTITY_ID_HEADER] = f"ci-{cid}"
    elif lines and not _in_host_namespace(namespace):
        node = _node_path(lines, mount)
        try:
            inode = os.stat(node).st_ino if node else None
        except OSError:
            inode = None
        if inode:
            headers[ENTITY_ID_HEADER] = f"in-{inode}"
    external = environ.get(EXTERNAL_ENV_VAR, "").strip()
    if external and _HEADER_VALUE.match(external):
        headers[EXTERNAL_ENV_HEADER] = external
    return headers
