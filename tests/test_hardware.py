"""The `auto` choices of XLA and precision, and the CPU flag reader."""

import pytest

from dreamer_tf import hardware


@pytest.mark.parametrize('jit, image_obs, gpu, expected', [
    ('auto', False, False, True),    # vector obs on a CPU: XLA measured faster
    ('auto', True, False, False),    # images on a CPU: oneDNN convolutions measured faster
    ('auto', True, True, True),      # a GPU: XLA everywhere
    ('auto', False, True, True),
    (False, False, True, False),     # an explicit choice wins
    (True, True, False, True),
])
def test_resolve_jit(jit, image_obs, gpu, expected):
    assert hardware.resolve_jit(jit, image_obs, gpu) is expected


@pytest.mark.parametrize('precision, gpu, amx, expected', [
    ('auto', False, False, 'float32'),
    ('auto', False, True, 'bfloat16'),
    ('auto', True, False, 'bfloat16'),
    ('float16', True, True, 'float16'),
    ('float32', True, True, 'float32'),
])
def test_resolve_precision(precision, gpu, amx, expected):
    assert hardware.resolve_precision(precision, gpu, amx) == expected


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx512f amx_bf16 amx_tile\n'
                    'bugs\t\t: spectre_v1\n')
    assert hardware.cpu_flags(str(info)) == {'fpu', 'sse2', 'avx512f', 'amx_bf16', 'amx_tile'}
    assert hardware.cpu_flags(str(tmp_path / 'missing')) == frozenset()


def test_this_machine_reads_consistently():
    assert hardware.has_amx() == ('amx_bf16' in hardware.cpu_flags())
    assert isinstance(hardware.has_gpu(), bool)
