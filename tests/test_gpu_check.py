"""benchmarks/gpu_check.sh: its CPU dry run goes through every step, and the [gpu] extra matches the pin."""

import json
import os
import pathlib
import re
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'benchmarks' / 'gpu_check.sh'


def test_gpu_extra_installs_the_pinned_tensorflow():
    pinned = re.search(r'^tensorflow==(\S+)', (ROOT / 'requirements.txt').read_text(), re.M).group(1)
    extras = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['optional-dependencies']
    assert extras['gpu'] == [f'tensorflow[and-cuda]=={pinned}']


def test_unknown_argument_is_refused():
    proc = subprocess.run(['bash', str(SCRIPT), '--gpu'], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gpu_check.sh: unknown argument '--gpu'; allowed: --dry-run"


def test_dry_run_times_a_case_and_runs_the_paper_command(tmp_path):
    env = dict(os.environ, GPU_CHECK_DIR=str(tmp_path), PYTHON=sys.executable)
    proc = subprocess.run(['bash', str(SCRIPT), '--dry-run'], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'GPUs: none (CPU only)' in proc.stdout
    results = json.loads((tmp_path / 'speed.json').read_text())
    assert results and len(results['results']) == 1 and all(r['median_s'] > 0 for r in results['results'])
    last = proc.stdout.strip().splitlines()[-1]
    assert re.search(r'cartpole_balance: 600 env steps, \d+ updates, [0-9.]+ s/update', last), last
