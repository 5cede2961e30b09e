"""Property tests: no parser raises on any bytes, and what they return is well-formed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from simulation.fakeproc import argv_bytes, stat_line
from stages.procfs import WORKSPACE_ENV, decode, parse_cmdline, parse_gitpod_env
from stages.redact import strip_userinfo
from stages.statline import parse_stat

# Bytes biased towards the ones that matter to the parsers.
procfs_bytes = st.lists(
    st.one_of(
        st.sampled_from([b"\0", b" ", b")", b"(", b"=", b"GITPOD_", b"9"]), st.binary(max_size=8)
    ),
    max_size=200,
).map(b"".join)


@given(procfs_bytes)
def test_stat_never_raises(data: bytes) -> None:
    result = parse_stat(data)
    if result is not None:
        assert 0 <= result.ppid < 2**64
        assert 0 < result.starttime < 2**64


@given(
    st.integers(1, 2**22),
    st.binary(max_size=64).filter(lambda b: b"\n" not in b),
    st.integers(0, 2**64 - 1),
    st.integers(1, 2**64 - 1),
)
def test_stat_reads_any_comm(pid: int, comm: bytes, ppid: int, starttime: int) -> None:
    """D1: whatever the comm holds, ppid and starttime come out right."""
    result = parse_stat(stat_line(pid, comm, ppid, starttime))
    assert result is not None
    assert (result.ppid, result.starttime) == (ppid, starttime)


@given(procfs_bytes)
def test_cmdline_never_raises(data: bytes) -> None:
    argv = parse_cmdline(data)
    assert all(isinstance(a, str) for a in argv)
    assert argv == [] or data.rstrip(b"\0")


@given(st.lists(st.binary(max_size=12), max_size=8))
def test_cmdline_decodes_as_each_argument_alone(args: list[bytes]) -> None:
    """One decode of the whole line splits exactly as decoding each argument alone would,
    whatever invalid UTF-8 sits next to a NUL."""
    data = b"\0".join(a.replace(b"\0", b"") for a in args)
    stripped = data.rstrip(b"\0")
    expected = [decode(a) for a in stripped.split(b"\0")] if stripped else []
    assert parse_cmdline(data) == expected


# Surrogates are excluded: they are not text a process can have (nor encodable as UTF-8).
_ARG_CHARS = st.characters(blacklist_characters="\0", blacklist_categories=["Cs"])


@given(st.lists(st.text(alphabet=_ARG_CHARS, max_size=20), max_size=8))
def test_cmdline_round_trips(argv: list[str]) -> None:
    expected = list(argv)
    while expected and expected[-1] == "":  # trailing empty args are NUL padding to procfs
        expected.pop()
    assert parse_cmdline(argv_bytes(argv)) == expected


@given(procfs_bytes, st.booleans())
def test_environ_never_raises(data: bytes, truncated: bool) -> None:
    env = parse_gitpod_env(data, truncated=truncated)
    assert set(env) <= set(WORKSPACE_ENV)


@given(
    st.dictionaries(
        st.sampled_from(sorted(WORKSPACE_ENV)),
        st.text(max_size=600).filter(lambda s: "\0" not in s),
    ),
    st.text(max_size=2000).filter(lambda s: "\0" not in s),
)
def test_environ_values_cannot_smuggle_entries(env: dict[str, str], noise: str) -> None:
    """D5: a value holding 'GITPOD_…=' text at any offset never becomes an entry."""
    raw = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
    raw += b"NOISE=" + noise.encode() + b"GITPOD_WORKSPACE_ID=spoofed\0"
    expected = {k: v.encode().decode("utf-8", "backslashreplace") for k, v in env.items()}
    if "GITPOD_WORKSPACE_CONTEXT_URL" in expected:  # its userinfo is stripped (issue #12)
        url = expected["GITPOD_WORKSPACE_CONTEXT_URL"]
        expected["GITPOD_WORKSPACE_CONTEXT_URL"] = strip_userinfo(url)
    assert parse_gitpod_env(raw) == expected


@given(
    st.text(max_size=200).filter(lambda s: "\0" not in s),
    st.sampled_from(["https://", "http://", "ssh://", "git+https://", "prebuild/https://"]),
)
def test_environ_context_url_never_carries_userinfo(secret: str, scheme: str) -> None:
    token = "tok" + "".join(c for c in secret if c.isalnum())[:40]
    url = f"{scheme}oauth2:{token}@github.com/o/r"
    raw = b"PATH=/bin\0GITPOD_WORKSPACE_CONTEXT_URL=" + url.encode() + b"\0OTHER=x\0"
    env = parse_gitpod_env(raw)
    assert env == {"GITPOD_WORKSPACE_CONTEXT_URL": f"{scheme}github.com/o/r"}
    assert token not in "".join(env.values())
