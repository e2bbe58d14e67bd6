"""Container and entity ids from /proc/self/cgroup, the way dd-trace-py reads them:
real sample lines of cgroup v1 and v2 (Docker, Kubernetes, ECS, Fargate, systemd,
PCF), each expected id read off the line by hand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import flageval._container as container
from flageval._container import container_headers, container_id_of

DOCKER_ID = "3726184226f5d3147c25fdeab5b60097e378e8a720503a5e19ecfdf29f869860"
K8S_ID = "3e74d3fd9db4c9dd921ae05c2502fb984d0cde1b36e581b13f79c639da4518a1"
ECS_ID = "38fac3e99302b3622be089dd41e7ccf38aff368a86cc339972075136ee2710ce"
SCOPE_ID = "cde7c2bab394630a42d73dc610b9c57415dced996106665d427f6d0566594411"
CRI_ID = "9d076e7bd1fc0b5ed3e1d4f0f2c9bbf3ddb2f6e1d44f0c7ca1c7b4c4b6e1e8e1"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # cgroup v1, Docker
        (f"13:name=systemd:/docker/{DOCKER_ID}", DOCKER_ID),
        (f"4:memory:/docker/{DOCKER_ID}\n", DOCKER_ID),
        # cgroup v1, Kubernetes: the pod id is the segment before, never the container
        (
            "11:perf_event:/kubepods/besteffort/pod3d274242-8ee0-11e9-a8a6-1e68d864ef1a/" + K8S_ID,
            K8S_ID,
        ),
        # A pod-level line (no container segment): dd-trace-py reads the pod's UUID as
        # the id; so does this.
        (
            "11:perf_event:/kubepods/besteffort/pod3d274242-8ee0-11e9-a8a6-1e68d864ef1a",
            "3d274242-8ee0-11e9-a8a6-1e68d864ef1a",
        ),
        # ECS on EC2, and Fargate 1.3 (a task UUID before the container id)
        (f"9:perf_event:/ecs/my-cluster/5a0d5ceddf6c44c1928d367a815d890f/{ECS_ID}", ECS_ID),
        (f"11:hugetlb:/ecs/55091c13-b8cf-4801-b527-f4601742204d/{ECS_ID}", ECS_ID),
        # Fargate 1.4: <32 hex>-<digits>
        (
            "1:name=systemd:/ecs/34dc0b5e626f2c5c4c5170e34b10e765-1234567890",
            "34dc0b5e626f2c5c4c5170e34b10e765-1234567890",
        ),
        # systemd driver: docker-<id>.scope (v1), cri-containerd-<id>.scope (v2, host ns)
        (f"1:name=systemd:/system.slice/docker-{SCOPE_ID}.scope", SCOPE_ID),
        (
            "0::/kubepods.slice/kubepods-burstable.slice/"
            "kubepods-burstable-pod2c48913c_b29f_11e7_9350_020968147796.slice/"
            f"cri-containerd-{CRI_ID}.scope",
            CRI_ID,
        ),
        # PCF / Garden: a UUID-like id of five groups
        (
            "1:name=systemd:/system.slice/garden.service/garden/6f265890-5165-7fab-6b52-18d1",
            "6f265890-5165-7fab-6b52-18d1",
        ),
        # not a container: a host's lines, a private-namespace v2 root, garbage
        ("0::/user.slice/user-1000.slice/session-3.scope", None),
        ("0::/", None),
        ("4:memory:/process_api/d072c1f0f6473dee1a6097739f488937", None),  # 32 hex: no
        ("not a cgroup line", None),
        ("", None),
    ],
)
def test_container_id_of_sample_lines(line: str, expected: str | None) -> None:
    assert container_id_of(line) == expected


def _cgroup(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cgroup"
    path.write_text(text)
    return str(path)


def _private_namespace(tmp_path: Path) -> str:
    """A namespace file whose inode is not the host's (any ordinary file's)."""
    ns = tmp_path / "ns_cgroup"
    ns.write_text("")
    assert os.stat(ns).st_ino != container.HOST_CGROUP_NAMESPACE_INODE
    return str(ns)


def test_docker_v1_gives_container_and_entity_ids(tmp_path: Path) -> None:
    text = (
        f"12:pids:/docker/{DOCKER_ID}\n11:memory:/docker/{DOCKER_ID}\n1:cpu:/docker/{DOCKER_ID}\n"
    )
    headers = container_headers(_cgroup(tmp_path, text), environ={})
    assert headers == {"Datadog-Container-ID": DOCKER_ID, "Datadog-Entity-ID": f"ci-{DOCKER_ID}"}


def test_v2_private_namespace_gives_the_cgroup_node_inode(tmp_path: Path) -> None:
    mount = tmp_path / "sys_fs_cgroup"
    mount.mkdir()
    headers = container_headers(
        _cgroup(tmp_path, "0::/\n"), str(mount), _private_namespace(tmp_path), environ={}
    )
    assert headers == {"Datadog-Entity-ID": f"in-{os.stat(mount).st_ino}"}


def test_v1_private_namespace_uses_the_memory_controller_node(tmp_path: Path) -> None:
    mount = tmp_path / "sys_fs_cgroup"
    (mount / "memory" / "app").mkdir(parents=True)
    text = "5:cpu:/\n4:memory:/app\n1:name=systemd:/\n"
    headers = container_headers(
        _cgroup(tmp_path, text), str(mount), _private_namespace(tmp_path), environ={}
    )
    assert headers == {"Datadog-Entity-ID": f"in-{os.stat(mount / 'memory' / 'app').st_ino}"}


def test_host_namespace_sends_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mount = tmp_path / "sys_fs_cgroup"
    mount.mkdir()
    ns = tmp_path / "host_ns"
    ns.write_text("")
    # This file stands for the host's namespace: its inode is the host's.
    monkeypatch.setattr(container, "HOST_CGROUP_NAMESPACE_INODE", os.stat(ns).st_ino)
    text = "0::/user.slice/user-1000.slice/session-3.scope\n"
    assert container_headers(_cgroup(tmp_path, text), str(mount), str(ns), environ={}) == {}
    # No namespace file at all (an old kernel): no container to name either.
    missing = str(tmp_path / "nope")
    assert container_headers(_cgroup(tmp_path, "0::/\n"), str(mount), missing, environ={}) == {}


def test_no_cgroup_file_no_headers_and_never_raises(tmp_path: Path) -> None:
    assert container_headers(str(tmp_path / "missing"), environ={}) == {}
    assert container_headers("/nul\0byte", environ={}) == {}


def test_external_env_is_sent_when_it_is_one_printable_line(tmp_path: Path) -> None:
    cgroup = _cgroup(tmp_path, "")
    value = "it-false,cn-app,pu-9b2c1e0a-0e2f-4c3d-9f3e-1a2b3c4d5e6f"
    assert container_headers(cgroup, environ={"DD_EXTERNAL_ENV": value}) == {
        "Datadog-External-Env": value
    }
    # A value that would break every request's header block is left out.
    assert container_headers(cgroup, environ={"DD_EXTERNAL_ENV": "a\r\nX-Evil: 1"}) == {}
