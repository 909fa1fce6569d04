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


# -- issue 12, item 5: the budget holds inside a render --------------------------------------

LONG = "{% set s = 'x' * 20000 %}"
HOSTILE = [
    # nested loops over a long string, no call in the body: only the kill stops it
    LONG + "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    LONG + "{% for a in s %}{% for b in s %}{% if a == b %}{% endif %}{% endfor %}{% endfor %}",
    "{{ ''|center(100000000) }}",
    "{{ 'a'|indent(100000000) }}",
    "{{ '%100000000s'|format('a') }}",
    "{{ '%100000000s' % 'a' }}",
    "{{ '{:>100000000}'.format('a') }}",
    "{{ 'a'.ljust(100000000) }}",
    "{{ 'a'.zfill(100000000) }}",
    LONG + "{{ s|replace('x', s) }}",
    LONG + "{{ s.replace('', s) }}",
    LONG + "{{ ([s] * 100000)|join }}",
    LONG + "{{ s.join([s] * 100000) }}",
    ("{% set ns = namespace(x='ab') %}{% for i in range(64) %}{% set ns.x = ns.x ~ ns.x %}"
     "{% endfor %}{{ ns.x|length }}"),
    ("{% set ns = namespace(x='ab') %}{% for i in range(64) %}{% set ns.x = ns.x + ns.x %}"
     "{% endfor %}{{ ns.x|length }}"),
    ("{% set ns = namespace(x=[1]) %}{% for i in range(64) %}{% set ns.x = ns.x + ns.x %}"
     "{% endfor %}{{ ns.x|length }}"),
    ("{% set ns = namespace(x='ab') %}{% for i in range(64) %}{% set t %}{{ ns.x }}{{ ns.x }}"
     "{% endset %}{% set ns.x = t %}{% endfor %}{{ ns.x|length }}"),
    "{{ [1]|batch(100000000, 0)|list|length }}",
    "{{ []|slice(100000000)|list|length }}",
    "{{ lipsum(100000000) }}",
    "{{ messages|tojson(indent=100000000) }}",
]


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_template_costs_at_most_its_budget(source: str) -> None:
    """Time and memory stay within the budget however the template spends them: the render
    stops by the deadline (plus the kill's grace), and this process's peak memory does not
    grow (the render happens elsewhere, and oversized values are refused before they are
    built)."""
    import resource

    ChatTemplate(CHATML_TEMPLATE).render(MSGS)  # a worker is ready: time the render only
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    with pytest.raises(TemplateError):
        ChatTemplate(source, timeout_s=1.0, max_output_chars=1 << 20).render(MSGS)
    assert time.monotonic() - t0 < 1.6
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown_kib < 64 * 1024, f"peak RSS grew {grown_kib} KiB"


def test_worker_survives_and_is_replaced() -> None:
    """After a render was stopped, the next one works (a fresh worker)."""
    hostile = ChatTemplate(LONG + "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
                           timeout_s=0.5)
    with pytest.raises(TemplateError, match="exceeded"):
        hostile.render(MSGS)
    assert ChatTemplate(CHATML_TEMPLATE + " ").render(MSGS).startswith("<|im_start|>user\nhi")


def test_ordinary_templates_still_render() -> None:
    src = ("{% for m in messages %}{{ '{}: {}'.format(m.role, m.content)|center(20) }}"
           "{{ m.content|replace('h', 'H')|indent(2) }}{{ ['a', 'b']|join('-') }}"
           "{{ '%-5s|' % m.role }}{% endfor %}")
    assert ChatTemplate(src).render(MSGS) == "      user: hi      Hia-buser |"
