"""Chat templates render in a bounded sandbox: hostile templates fail cleanly and fast."""

from __future__ import annotations

import time
from pathlib import Path

import jinja2
import pytest
from hologram.heads import CHATML_TEMPLATE, ChatTemplate, TemplateError

MSGS = [{"role": "user", "content": "hi"}]
CANARY = Path("/tmp/hologram-ssti-canary")


def test_jinja_version() -> None:
    major, minor, patch = (int(x) for x in jinja2.__version__.split(".")[:3])
    assert (major, minor, patch) >= (3, 1, 6)


def test_chatml_fallback() -> None:
    t = ChatTemplate(None)
    assert t.is_fallback and t.source == CHATML_TEMPLATE
    assert t.render(MSGS) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert t.render(MSGS, add_generation_prompt=False) == "<|im_start|>user\nhi<|im_end|>\n"


def test_helpers_available() -> None:
    t = ChatTemplate("{{ bos_token }}{{ messages|tojson }}{{ strftime_now('%Y') }}"
                     "{{ eos_token }}", bos_token="<s>", eos_token="</s>")
    out = t.render(MSGS)
    assert out.startswith('<s>[{"role": "user", "content": "hi"}]') and out.endswith("</s>")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ().__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('touch " + str(CANARY) + "').read() }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ '{0.__class__.__mro__}'|attr('format')(1) }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
        "{{ self.__init__.__globals__.__builtins__ }}",
        "{{ messages.append(1) }}",
    ],
)
def test_ssti_payloads_fail(source: str) -> None:
    with pytest.raises(TemplateError):
        ChatTemplate(source).render(MSGS)
    assert not CANARY.exists()


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ 'a' * 1000000000 }}",
        "{{ 10 ** 100000000 }}",
        "{% macro x() %}{{ x() }}{% endmacro %}{{ x() }}",
        "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}" * 2,
        "{{ range(10**9)|list }}",
        "{{ " + "(" * 500 + "1" + ")" * 500 + " }}",
        "{% for m in messages %}",
    ],
)
def test_dos_payloads_fail_fast(source: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(TemplateError):
        ChatTemplate(source, timeout_s=1.0, max_output_chars=1 << 20).render(MSGS)
    assert time.monotonic() - t0 < 2.5


def test_raise_exception_message() -> None:
    src = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('need a system') }}{% endif %}"
    with pytest.raises(TemplateError, match="need a system"):
        ChatTemplate(src).render(MSGS)


def test_oversized_template() -> None:
    with pytest.raises(TemplateError):
        ChatTemplate("x" * (2 << 20))
