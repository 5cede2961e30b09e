"""Secrets out of the values a record carries: ``strip_userinfo`` for URLs. Stdlib only.

A workspace's context or repository URL may carry a credential in its userinfo —
``https://oauth2:ghp_…@github.com/org/repo``, or a token alone as the user name
(``https://ghp_…@github.com/…``) — and records are seen by every tap client. The rule:

- After every ``://`` (any scheme: https, http, ssh, git+https, …, and also a URL embedded
  after a prefix such as Gitpod's ``prebuild/https://…``), the authority runs to the first
  ``/``, ``?`` or ``#``; everything in it up to its last ``@`` is userinfo and is removed.
- scp-like ``user@host:path`` (what git accepts without a scheme): everything before the last
  ``@`` that comes before the first ``/`` is userinfo and is removed.
- The one userinfo kept, in both forms, is exactly ``git`` (``git@github.com:org/repo``,
  ``ssh://git@host/…``): the conventional account name of GitHub, GitLab, Bitbucket and
  Azure, which is no secret, and without which the URL would no longer say how to clone.
  Anything else — ``git:token``, another name, a token — goes, because a name cannot be
  told from a token.

The text is taken as whitespace-separated words, each handled alone, so a credential is
found wherever a word holds one. Valid URLs percent-encode ``/?#`` and whitespace in
userinfo; a password holding them raw cannot be told from a path and is not promised to go.
Linear in the input (``str.find`` scans, no regular expression that can backtrack), never
raises, and never makes the text longer; applying it twice changes nothing more.
"""

from __future__ import annotations

_KEPT_USER = "git"
_AUTHORITY_END = "/?#"


def strip_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` / ``token@`` removed (see the module docstring)."""
    if not isinstance(url, str):
        return ""
    out: list[str] = []
    start = 0
    for i, c in enumerate(url):
        if c.isspace():
            out.append(_strip_word(url[start:i]))
            out.append(c)
            start = i + 1
    out.append(_strip_word(url[start:]))
    return "".join(out)


def _strip_word(word: str) -> str:
    word = _strip_scp_like(word)
    out: list[str] = []
    i = 0
    while True:
        # A "://" may begin at the ':' ending the previous authority ("a://b://u:p@h").
        j = word.find("://", max(i - 1, 0)) if i else word.find("://")
        if j < 0:
            out.append(word[i:])
            return "".join(out)
        start = j + 3
        out.append(word[i:start])
        end = _authority_end(word, start)
        authority = word[start:end]
        at = authority.rfind("@")
        if at >= 0 and authority[:at] != _KEPT_USER:
            authority = authority[at + 1 :]
        out.append(authority)
        i = end


def _strip_scp_like(word: str) -> str:
    scheme = word.find("://")
    head = word if scheme < 0 else word[:scheme]
    slash = head.find("/")
    if slash >= 0:
        head = head[:slash]
    at = head.rfind("@")
    if at < 0 or head[:at] == _KEPT_USER:
        return word
    return word[at + 1 :]


def _authority_end(word: str, start: int) -> int:
    """Where the authority that begins at ``start`` ends (a scan that stops there: the
    authorities of one word do not overlap, so all of them together are linear)."""
    for i in range(start, len(word)):
        if word[i] in _AUTHORITY_END:
            return i
    return len(word)
