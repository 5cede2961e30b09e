"""strip_userinfo: no credential of a URL survives, whatever surrounds it."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from stages.redact import strip_userinfo

# What may appear raw in each part of a URL as these tests build them.
_NAME = st.text(st.characters(exclude_characters="@/?#:", exclude_categories=["Z", "Cc"]))
_SECRET = st.text(
    st.characters(exclude_characters="/?#", exclude_categories=["Z", "Cc"]), min_size=4
)
_HOST = st.text(
    st.characters(exclude_characters="@/?#", exclude_categories=["Z", "Cc"]), min_size=1
)
_SCHEME = st.one_of(
    st.sampled_from(["https", "http", "ssh", "git", "git+https", "git+ssh", "ftp"]),
    st.from_regex(r"[a-z][a-z0-9+.-]{0,9}", fullmatch=True),
)
_TAIL = st.one_of(
    st.just(""),
    st.builds(
        lambda c, t: c + t,
        st.sampled_from("/?#"),
        st.text(alphabet=st.characters(exclude_categories=["Z", "Cc"], exclude_characters=":")),
    ),
)


@pytest.mark.parametrize(
    ("url", "stripped"),
    [
        (
            "https://oauth2:ghp_16C7e42F292c6912E7710c838347Ae178B4a@github.com/o/r",
            "https://github.com/o/r",
        ),
        ("https://ghp_token@github.com/o/r.git", "https://github.com/o/r.git"),
        ("git+https://user:tok@gitlab.com/g/p", "git+https://gitlab.com/g/p"),
        ("ssh://deploy:pw@host:2222/r.git", "ssh://host:2222/r.git"),
        ("ssh://git@github.com/o/r.git", "ssh://git@github.com/o/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("git:tok@github.com:o/r.git", "github.com:o/r.git"),
        ("glpat-abcdefghij0123456789@gitlab.com:g/p", "gitlab.com:g/p"),
        ("https://u:p@ss@host/x", "https://host/x"),  # an unencoded '@': up to the last
        ("prebuild/https://u:tok@github.com/o/r", "prebuild/https://github.com/o/r"),
        ("https://github.com/o/r/tree/v1@2", "https://github.com/o/r/tree/v1@2"),
        ("https://github.com/o/r", "https://github.com/o/r"),
        ("a https://u:p@h b", "a https://h b"),
        ("x://a@b://u:p@h/", "x://b://h/"),  # a "://" that starts at an authority's end
        ("", ""),
        ("@", ""),
        ("://@", "://"),
    ],
)
def test_examples(url: str, stripped: str) -> None:
    assert strip_userinfo(url) == stripped


def test_not_a_string_is_empty() -> None:
    assert strip_userinfo(None) == ""  # type: ignore[arg-type]


@given(_SCHEME, _NAME, _SECRET, _HOST, _TAIL)
def test_a_password_never_survives(
    scheme: str, user: str, password: str, host: str, tail: str
) -> None:
    assume(password not in scheme + user + host + tail)
    out = strip_userinfo(f"{scheme}://{user}:{password}@{host}{tail}")
    assert password not in out
    assert out == f"{scheme}://{host}{tail}"


@given(_SCHEME, _SECRET, _HOST, _TAIL)
def test_a_token_as_the_user_never_survives(scheme: str, user: str, host: str, tail: str) -> None:
    assume(user != "git" and user not in scheme + host + tail)
    assert user not in strip_userinfo(f"{scheme}://{user}@{host}{tail}")


@given(_NAME, _SECRET, _HOST, st.text())
def test_scp_like_credentials_never_survive(user: str, password: str, host: str, path: str) -> None:
    url = f"{user}:{password}@{host}:{path}"
    assume(password not in user + host + path and "://" not in url)
    assert password not in strip_userinfo(url)


@given(before=st.text(), scheme=_SCHEME, password=_SECRET, host=_HOST, tail=_TAIL, after=st.text())
def test_a_url_anywhere_in_the_text_loses_its_password(
    *, before: str, scheme: str, password: str, host: str, tail: str, after: str
) -> None:
    """Embedded after any prefix, and followed by a space and anything."""
    assume(password not in before + scheme + host + tail + after)
    text = f"{before}{scheme}://x:{password}@{host}{tail} {after}"
    assert password not in strip_userinfo(text)


@given(st.text(alphabet=":/@?#ab", max_size=12), _SECRET, _HOST)
def test_url_punctuation_before_a_url_does_not_hide_its_password(
    before: str, password: str, host: str
) -> None:
    assume(password not in before + host)
    assert password not in strip_userinfo(f"{before}://u:{password}@{host}")


@given(st.text())
def test_idempotent_never_longer_never_raises(text: str) -> None:
    once = strip_userinfo(text)
    assert len(once) <= len(text)
    assert strip_userinfo(once) == once


@given(st.text(alphabet=":/@?#ag it", max_size=60))
def test_idempotent_on_url_punctuation(text: str) -> None:
    once = strip_userinfo(text)
    assert strip_userinfo(once) == once


def test_a_megabyte_of_url_punctuation() -> None:
    """Long runs of what the scans look for: handled, and never longer."""
    for text in ("a://" * 250_000, "@" * 1_000_000, "a:" + "/" * 1_000_000, "u@" * 500_000):
        assert len(strip_userinfo(text)) <= len(text)
