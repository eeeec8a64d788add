import subprocess
import sys

import pytest

import clipsei


@pytest.mark.parametrize("name", clipsei.__all__)
def test_every_public_name_resolves(name):
    assert getattr(clipsei, name) is not None


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        clipsei.nope  # noqa: B018


def test_import_is_lazy():
    code = ("import sys, clipsei; "
            "print(any(m in sys.modules for m in ('torch', 'faiss', 'open_clip')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
