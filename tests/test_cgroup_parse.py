"""stages/cgroup.py, cgroupdir.py on real-world /proc/<pid>/cgroup texts, and hostile ones."""

from __future__ import annotations

import string
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.cgroup import (
    CGROUP_MAX_BYTES,
    NO_CONTAINER,
    RUNTIMES,
    ContainerRef,
    cgroup_matches,
    parse_cgroup,
    ref_from_path,
    unit_matches,
    unit_names,
)
from stages.cgroupdir import cgroup_mounts, container_dir

FIXTURES = Path(__file__).parent / "data" / "cgroup"


class Expect(NamedTuple):
    runtime: str
    container_id: str
    pod_uid: str = ""
    qos: str = ""
    version: int = 2
    nested: bool = False
    unit: str = ""


EXPECTED = {
    "containerd-systemd-v2": Expect(
        "containerd",
        "2032491dcae31e6746f47daa0ac74564f2843a1bd847c5e6c4eb501ca132ac36",
        "55c6c714-b240-4dec-9a45-57b61696ab6e",
        "burstable",
    ),
    "containerd-systemd-v2-staticpod": Expect(
        "containerd",
        "2884d57c0e100d7a9a2f9487ce0bc2986bca3430e988af7a4865aff061f51ac5",
        "8daa50c3a64c9ff60bb9eab7b44b56fd",
        "burstable",
    ),
    "containerd-systemd-v2-guaranteed": Expect(
        "containerd",
        "484b78324bb363a0cc93d136431e2005ceac970d035aaeec4ad6bfb6848a7b51",
        "adcfbb42-ec24-48ae-a259-f756c8d1f046",
        "guaranteed",
    ),
    "containerd-systemd-v2-cgroupns": Expect(
        "containerd",
        "2032491dcae31e6746f47daa0ac74564f2843a1bd847c5e6c4eb501ca132ac36",
        "55c6c714-b240-4dec-9a45-57b61696ab6e",
        "burstable",
    ),
    "containerd-kind-v2": Expect(
        "containerd",
        "a09bc17f5aa29b0dbdec9ede5f46cf1396d2405917ab02e6f1eb1019f388396e",
        "1e597579-417e-482f-bf65-5fe170c3aebd",
        "besteffort",
        nested=True,
    ),
    "containerd-systemd-v1": Expect(
        "containerd",
        "ee4b20e90ac7f42a10bd004d05646b13d8ab5e2c5e7cbc01abf8006bac016459",
        "0125ec2f-b64a-4868-8f5b-94b56cbab864",
        "besteffort",
        version=1,
        unit="containerd.service",
    ),
    "containerd-cgroupfs-v1": Expect(
        "",
        "34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376",
        "74c13223-5a00-11e9-b385-42010a80018d",
        "besteffort",
        version=1,
    ),
    "containerd-cgroupfs-v2": Expect(
        "",
        "dbc9f149296cec5d12b78385eb5b2c0cfe20b476f117c15c76d981cff44053c1",
        "85401dd3-38cd-47b6-a90a-e16c0e1c06e6",
        "besteffort",
    ),
    "containerd-cgroupfs-v2-guaranteed": Expect(
        "",
        "0a1b22ec1361a97c3511db37a4bae932d41b22264e5b97611748f8b662312574",
        "fbc202d3-da21-11e8-ab5e-42010a80014b",
        "guaranteed",
    ),
    "crio-systemd-v2": Expect(
        "cri-o",
        "66d6d4ac9851cfcab8400277ad96770ce52c1d75eeac29046753875056eacaed",
        "207aaad1-659f-4db8-88e0-46e0cdcc3004",
        "burstable",
    ),
    "crio-conmon-systemd-v2": Expect(
        "",
        "",
        "207aaad1-659f-4db8-88e0-46e0cdcc3004",
        "burstable",
        unit="crio-conmon-32da98c8522068be05a7510a3eddb09cad6ed2f03286180d0e931d0d0b6224a6.scope",
    ),
    "crio-conmon-system-v1": Expect(
        "",
        "",
        version=1,
        unit="crio-conmon-e0c85fe7644a858988d9687c2e0736a7d31922740d0f3e001c6b2e0aa7e5f528.scope",
    ),
    "crio-systemd-v1": Expect(
        "cri-o",
        "15b6e0c6490cad17fcf69eb837794349b4df96f84ba96c6be9828fe281c055a9",
        "c8bad552-5c99-4d4f-b71c-c426c0cde014",
        "besteffort",
        version=1,
    ),
    "crio-minikube-v1": Expect(
        "cri-o",
        "0765f197c9158576f202e50498b488cd0d2b022fb2462b0a629f214bb51cd57d",
        "2cde702b-a0cf-438d-a228-fb164e54434b",
        "besteffort",
        version=1,
        nested=True,
    ),
    "crio-cgroupfs-v1": Expect(
        "cri-o",
        "d0af1882ed72a26066dd0c6b82d1d8f270366a224a270633846645365b411aa2",
        "d9866282-9f9d-11e7-96a2-525400123456",
        "besteffort",
        version=1,
    ),
    "docker-systemd-v2": Expect(
        "docker", "b508e2673897c4f521d858f56dab18e31ddbfc1f83300fb9793c8a4052af8f05"
    ),
    "docker-systemd-v1": Expect(
        "docker", "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d", version=1
    ),
    "docker-cgroupfs-v1": Expect(
        "docker",
        "2403ccfe427f1dc7b6120dccb9ac58c2f8456950380d587a9f33ea7f00dd303d",
        version=1,
    ),
    "docker-cgroupfs-v1-mixed": Expect(
        "docker",
        "5dace3de0735f73d2b5048f12d41a71741a02e49668de921fdae62f7e65dc498",
        version=1,
    ),
    "docker-cgroupfs-v2": Expect(
        "docker", "5dace3de0735f73d2b5048f12d41a71741a02e49668de921fdae62f7e65dc498"
    ),
    "docker-kubepods-systemd-v1": Expect(
        "docker",
        "d0b3604b67ac7930dd34ba3a796627e3e4717d12309e90a4afe3f38b6816ac98",
        "7d4424e6-bb13-42f4-a47a-45a4828bf54d",
        "burstable",
        version=1,
    ),
    "docker-in-docker-cgroupfs-v1": Expect(  # the outer container is the one this host knows
        "docker",
        "81950eac55062e5d8e7b5567d1036e4b146dfe212bdc9263c97347e6ce86b904",
        version=1,
    ),
    "podman-systemd-v2": Expect(
        "podman", "cf21d19260ace8544fe8b769fc2638bf2c0873dfbfff0b6253f0569b26a1d5eb"
    ),
    "podman-conmon-systemd-v2": Expect(
        "",
        "",
        unit="libpod-conmon-cf21d19260ace8544fe8b769fc2638bf2c0873dfbfff0b6253f0569b26a1d5eb.scope",
    ),
    "podman-cgroupfs-v1": Expect(
        "podman", "c3be953da46e015e93a9de37c547a7587a32d609fad3ca721135937833d94a1e", version=1
    ),
    "host-systemd-v2": Expect("", "", unit="containerd.service"),
    "host-systemd-v1": Expect("", "", version=1),
    "host-init-v1": Expect("", "", version=1),
    "user-session-systemd-v2": Expect("", "", unit="session-3.scope"),
    "user-app-systemd-v2": Expect("", "", unit="app-gnome-kitty-3842.scope"),
    "user-session-systemd-v1": Expect("", "", version=1, unit="session-67.scope"),
}


def test_every_fixture_has_an_expectation() -> None:
    assert {path.stem for path in FIXTURES.glob("*.txt")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture(name: str) -> None:
    expect = EXPECTED[name]
    ref = parse_cgroup((FIXTURES / f"{name}.txt").read_bytes())
    got = Expect(ref.runtime, ref.container_id, ref.pod_uid, ref.qos, ref.version, ref.nested)
    assert got == expect._replace(unit="")
    assert ref.in_container == bool(expect.container_id)
    if expect.unit:
        assert ref.unit == expect.unit
    if ref.in_container:  # the container's own cgroup: the path up to its component
        assert ref.cgroup_path.startswith(ref.container_cgroup)
        assert ref.container_id in ref.container_cgroup.rsplit("/", 1)[1]
    else:
        assert ref.container_cgroup == ""


def test_hybrid_prefers_a_v2_line_that_names_a_container() -> None:
    text = (
        b"1:name=systemd:/docker/" + b"a" * 64 + b"\n"
        b"0::/system.slice/docker-" + b"b" * 64 + b".scope\n"
    )
    ref = parse_cgroup(text)
    assert (ref.version, ref.container_id) == (2, "b" * 64)


def test_podman_container_dir_is_the_scope_not_its_init_child() -> None:
    ref = parse_cgroup((FIXTURES / "podman-systemd-v2.txt").read_bytes())
    assert ref.container_cgroup.endswith(ref.container_id + ".scope")
    assert container_dir(ref.cgroup_path) == "/sys/fs/cgroup" + ref.container_cgroup


def test_container_dir_rebuilds_a_path_read_in_another_cgroup_namespace() -> None:
    relative = parse_cgroup((FIXTURES / "containerd-systemd-v2-cgroupns.txt").read_bytes())
    absolute = parse_cgroup((FIXTURES / "containerd-systemd-v2.txt").read_bytes())
    assert container_dir(relative.cgroup_path, "/host/cgroup") == container_dir(
        absolute.cgroup_path, "/host/cgroup"
    )
    cgroupfs = "/../../burstable/podfbc202d3-da21-11e8-ab5e-42010a80014b/" + "c" * 64
    assert container_dir(cgroupfs, "/r") == (
        "/r/kubepods/burstable/podfbc202d3-da21-11e8-ab5e-42010a80014b/" + "c" * 64
    )


@pytest.mark.parametrize(
    "path",
    [
        "/system.slice/sshd.service",  # no container
        "/../docker/" + "a" * 64,  # relative, and nothing says where /docker is
        "/kubepods/../etc/" + "a" * 64,  # ".." inside the path is no kernel path
        "/x\ufffd/docker-" + "a" * 64 + ".scope",  # an undecodable component
    ],
)
def test_container_dir_refuses(path: str) -> None:
    assert container_dir(path) is None


def test_cgroup_mounts_of_this_machine() -> None:
    """Whatever this machine mounts, a cgroup2 (or v1) mount found is a directory here."""
    mounts = cgroup_mounts(Path("/proc/self/mountinfo").read_bytes())
    assert mounts, "no cgroup hierarchy mounted on this machine"
    for mount_point in mounts.values():
        assert Path(mount_point).is_dir()


def test_cgroup_mounts_hybrid_and_v2_text() -> None:
    hybrid = (
        b"31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
        b"35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        b"40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        b"41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n"
        b"garbage line\n"
    )
    assert cgroup_mounts(hybrid) == {
        "memory": "/sys/fs/cgroup/memory",
        "name=systemd": "/sys/fs/cgroup/systemd",
        "": "/sys/fs/cgroup/unified",
    }
    v2 = b"29 23 0:26 / /host/sys\\040fs rw shared:4 - cgroup2 cgroup2 rw\n"
    assert cgroup_mounts(v2) == {"": "/host/sys fs"}
    assert cgroup_mounts(b"x" * (2 * 1024 * 1024)) == {}


def test_unit_and_cgroup_patterns() -> None:
    ref = parse_cgroup((FIXTURES / "user-app-systemd-v2.txt").read_bytes())
    assert unit_names(ref) == (
        "user.slice",
        "user-1000.slice",
        "user@1000.service",
        "app.slice",
        "app-gnome-kitty-3842.scope",
    )
    assert unit_matches(ref, "user@*.service")
    assert unit_matches(ref, "app-gnome-*.scope")
    assert not unit_matches(ref, "*/app.slice")  # per component: "*" never crosses "/"
    assert not unit_matches(ref, "sshd.service")
    assert cgroup_matches(ref, "/user.slice/*")
    assert not cgroup_matches(NO_CONTAINER, "*")


# ---- hostile input


def test_a_forged_pod_in_a_users_delegated_subtree_is_no_pod() -> None:
    """A user may mkdir anything under user@<uid>.service; the kubelet never puts pods there."""
    forged = (
        "0::/user.slice/user-1000.slice/user@1000.service/kubepods-besteffort-pod"
        "55c6c714_b240_4dec_9a45_57b61696ab6e.slice/cri-containerd-" + "e" * 64 + ".scope\n"
    )
    ref = parse_cgroup(forged.encode())
    assert ref.pod_uid == ""
    assert (ref.runtime, ref.container_id) == ("containerd", "e" * 64)  # claims only itself


def test_cgroups_made_below_a_container_do_not_move_a_process_out_of_it() -> None:
    """A container that may write its cgroupfs can only add components below its own."""
    base = (FIXTURES / "containerd-systemd-v2.txt").read_text().rstrip("\n")
    expect = parse_cgroup(base.encode())
    for below in (
        "/kubepods-besteffort-pod11111111_2222_3333_4444_555555555555.slice",
        "/docker-" + "f" * 64 + ".scope",
        "/\xff\xfe",
        "/init.scope",
    ):
        ref = parse_cgroup((base + below + "\n").encode("utf-8", "surrogateescape"))
        assert (ref.container_id, ref.pod_uid) == (expect.container_id, expect.pod_uid)
        assert ref.container_cgroup == expect.container_cgroup


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n\n",
        b"not a cgroup file",
        b"0:/kubepods/pod" + b"1" * 32,  # one colon
        b"x::/docker/" + b"a" * 64,  # hierarchy id not a number
        b"\xd9\xa3::/docker/" + b"a" * 64,  # a non-ASCII digit is no hierarchy id
        b"0:memory:/docker/" + b"a" * 64,  # v2 line with controllers
        b"3::/docker/" + b"a" * 64,  # v1 line without controllers
        b"0::docker/" + b"a" * 64,  # relative path
        b"0::/docker/" + b"a" * 64 + b"\n" * 100,  # more lines than hierarchies exist
        b"0::/docker/" + b"a" * 64 + b"/" + b"x" * CGROUP_MAX_BYTES,  # over the bound
        b"\x00::/docker/" + b"a" * 64,
    ],
)
def test_malformed_is_no_container(data: bytes) -> None:
    assert parse_cgroup(data) == NO_CONTAINER


@pytest.mark.parametrize(
    "path",
    [
        "/docker/" + "A" * 64,  # upper case is not what runtimes write
        "/docker/" + "a" * 63,
        "/docker/" + "a" * 65,
        "/system.slice/docker-" + "g" * 64 + ".scope",
        "/kubepods/besteffort/pod" + "1" * 31 + "/x",
        "/kubepods/besteffort/pod12345678-1234_1234-1234-123456789abc/x",  # mixed separators
        "/system.slice/crio-conmon-" + "a" * 64 + ".scope",
        "/machine.slice/libpod-conmon-" + "a" * 64 + ".scope",
        "/x.slice:cri-containerd:" + "a" * 63,
        "/x.slice:runc:" + "a" * 64,
    ],
)
def test_near_misses_name_no_container(path: str) -> None:
    ref = ref_from_path(path)
    assert not ref.in_container
    assert ref.pod_uid == ""


def test_deleted_cgroup_suffix_is_not_part_of_the_path() -> None:
    ref = parse_cgroup(b"0::/system.slice/docker-" + b"a" * 64 + b".scope (deleted)\n")
    assert ref.container_id == "a" * 64
    assert ref.cgroup_path.endswith(".scope")


# ---- properties

cgroup_bytes = st.lists(
    st.one_of(
        st.sampled_from(
            [
                *(b"0::", b"1:name=systemd:", b":", b"/", b"\n", b"kubepods", b".slice"),
                *(b".scope", b"-pod", b"docker-", b"cri-containerd-", b"crio-", b"libpod-"),
                *(b"..", b"_", b"a" * 64, b"1" * 32, b"0125ec2f_b64a_4868_8f5b_94b56cbab864"),
            ]
        ),
        st.binary(max_size=8),
    ),
    max_size=60,
).map(b"".join)
HEX = set(string.hexdigits.lower())


def well_formed(ref: ContainerRef) -> None:
    assert isinstance(ref, ContainerRef)
    if ref.container_id:
        assert len(ref.container_id) == 64 and set(ref.container_id) <= HEX
        assert ref.container_cgroup and ref.cgroup_path.startswith(ref.container_cgroup)
    else:
        assert ref.runtime == "" and ref.container_cgroup == ""
    assert ref.runtime in ("", *RUNTIMES)
    if ref.pod_uid:
        assert len(ref.pod_uid) in (32, 36) and set(ref.pod_uid) <= HEX | {"-"}
    assert ref.qos in ("", "guaranteed", "burstable", "besteffort")
    assert ref.version in (0, 1, 2)


@given(cgroup_bytes)
def test_never_raises_and_is_well_formed(data: bytes) -> None:
    ref = parse_cgroup(data)
    well_formed(ref)
    path = container_dir(ref.cgroup_path) if ref.cgroup_path else None
    assert path is None or (path.startswith("/sys/fs/cgroup/") and "/../" not in path)


hex_id = st.text("0123456789abcdef", min_size=64, max_size=64)
pod_uid = st.uuids().map(str)
qos = st.sampled_from(["guaranteed", "burstable", "besteffort"])
runtime_prefix = st.sampled_from(
    [("cri-containerd", "containerd"), ("crio", "cri-o"), ("docker", "docker")]
)


@given(pod_uid, hex_id, qos, runtime_prefix, st.tuples(st.booleans(), st.booleans()))
def test_generated_kubepods_paths_round_trip(
    uid: str, cid: str, level: str, prefix: tuple[str, str], forms: tuple[bool, bool]
) -> None:
    systemd, v1 = forms
    if systemd:
        escaped = uid.replace("-", "_")
        tier = "" if level == "guaranteed" else f"-{level}"
        parent = "" if level == "guaranteed" else f"/kubepods{tier}.slice"
        path = f"/kubepods.slice{parent}/kubepods{tier}-pod{escaped}.slice/{prefix[0]}-{cid}.scope"
        runtime = prefix[1]
    else:
        tier = "" if level == "guaranteed" else f"/{level}"
        path = f"/kubepods{tier}/pod{uid}/{cid}"
        runtime = ""
    line = f"4:memory:{path}\n1:name=systemd:/\n" if v1 else f"0::{path}\n"
    ref = parse_cgroup(line.encode())
    assert (ref.pod_uid, ref.container_id, ref.qos, ref.runtime) == (uid, cid, level, runtime)
    assert ref.version == (1 if v1 else 2)
    assert container_dir(path, "/root") == "/root" + path
