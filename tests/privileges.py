"""Running a test's program with fewer privileges than the test has."""

from __future__ import annotations

import os
import shutil

import pytest


def without_file_capabilities() -> list[str]:
    """A command prefix running a program as a root that file modes apply to: no
    CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH. (The Python in use may be out of reach of any
    other user, so changing user is no way to get a permission error.)"""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv(1) to drop file capabilities")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
