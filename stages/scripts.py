"""Which script an interpreter was given: the file (or inline code) its argv names.

``python3 -u miner.py``, ``bash miner.sh``, ``node -r ./x.js app.js``, ``java -jar m.jar``,
``perl -e '…'``. The interpreter is named by the basename of its executable or of argv[0],
less a version suffix (``python3.11`` → ``python``), so a renamed copy of python still counts
when its argv[0] says python, and ``exec -a vim python3 miner.py`` when its executable does.
Options are skipped as each interpreter parses them; the first operand is the script.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

DEFAULT_INTERPRETERS = (
    "python",
    "perl",
    "ruby",
    "node",
    "nodejs",
    "bash",
    "sh",
    "dash",
    "zsh",
    "ksh",
    "php",
    "lua",
    "luajit",
    "java",
)

# Per interpreter family: options whose value is inline code, options that take a value
# (skipped with it), options after which there is no script file (a module, stdin).
_INLINE = {
    "python": {"-c"},
    "sh": {"-c"},
    "perl": {"-e", "-E"},
    "ruby": {"-e"},
    "node": {"-e", "--eval", "-p", "--print"},
    "php": {"-r"},
    "lua": {"-e"},
}
_VALUE = {
    "python": {"-W", "-X", "--check-hash-based-pycs"},
    "sh": {"-o", "-O", "+o", "+O", "--rcfile", "--init-file"},
    "perl": {"-I", "-M", "-m", "-x"},
    "ruby": {"-I", "-r", "-C", "-E", "-F", "-K", "-W", "-x"},
    "node": {"-r", "--require", "--import", "--loader", "--experimental-loader", "-C"},
    "php": {"-c", "-d", "-z"},
    "lua": {"-l"},
    "java": {"-cp", "-classpath", "--class-path", "-p", "--module-path", "--add-modules"},
}
_NO_FILE = {"python": {"-m", "-"}, "java": {"-m", "--module"}, "sh": {"-s", "-"}}
_FAMILY = {"bash": "sh", "dash": "sh", "zsh": "sh", "ksh": "sh", "nodejs": "node", "luajit": "lua"}


class Script(NamedTuple):
    """A script file named on the command line (``path``, as the process gave it), or inline
    code (``code``, with ``path`` the option that carried it, e.g. ``-c``)."""

    path: str
    code: str | None = None


def interpreter_name(path: str) -> str:
    """``/usr/bin/python3.11`` → ``python``; ``lua5.4`` → ``lua``."""
    name = path.rsplit("/", 1)[-1]
    return name.rstrip("0123456789.-_") or name


def family_of(argv0: str, exe_path: str, interpreters: Collection[str]) -> str | None:
    """The interpreter family (``sh`` for every shell) of a process, or ``None``."""
    for name in (interpreter_name(exe_path.removesuffix(" (deleted)")), interpreter_name(argv0)):
        if name in interpreters:
            return _FAMILY.get(name, name)
    return None


def script_of(
    argv: list[str], exe_path: str, interpreters: Collection[str] = DEFAULT_INTERPRETERS
) -> Script | None:
    """The script an interpreter runs, or ``None`` (not an interpreter, no script file)."""
    family = family_of(argv[0], exe_path, interpreters) if argv else None
    if family is None:
        return None
    inline, value = _INLINE.get(family, set()), _VALUE.get(family, set())
    no_file = _NO_FILE.get(family, set())
    args = iter(argv[1:])
    script: Script | None = None
    for arg in args:
        if arg == "--" or (family == "java" and arg == "-jar"):
            following = next(args, None)
            script = None if following is None else Script(following)
        elif arg in inline:
            code = next(args, None)
            script = None if code is None else Script(arg, code)
        elif arg in value:
            next(args, None)
            continue
        elif arg.startswith("-") or (family == "sh" and arg.startswith("+")):
            if arg not in no_file:
                continue
        elif family != "java":  # java's operand is a class name, not a file
            script = Script(arg)
        break
    return script
