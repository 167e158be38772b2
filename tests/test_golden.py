"""Golden numbers: the papers' aggregates from the shipped reference tables, and a seeded training run.

Published aggregates (SPEC "Golden numbers"), recomputed by dreamer_tf.results.aggregate from
results/reference/ (per seed: mean return of the training episodes in the final window, the last
earlier episode when the window is empty; per task: mean over seeds; then mean/median over tasks):
- DreamerV3 Atari100k, last 10k of 400k frames, human-normalised: mean 1.245, median 0.480
- DreamerV3 DMC proprio, last 5% of 500k steps: mean 757.5; DMC vision, last 5% of 1M: mean 785.6
- Crafter human experts from their released episodes: score 50.5 +- 6.8 %

Each version's training golden file (tests/golden/training*.json) holds two parts (see
tests/golden/refresh.py): three updates from fixed weights on a fixed batch, compared tightly here,
in-process and under other oneDNN kernel choices, and a seeded debug run, compared within bounds that
float rounding cannot cross. Refresh with `python tests/golden/refresh.py --version=...` when a change
is meant to move them.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from dreamer_tf.envs.crafter import ACHIEVEMENTS, crafter_score
from dreamer_tf.results import aggregate, reference

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests' / 'golden'))
import update as golden_update  # noqa: E402  (tests/golden/update.py)

RAW = ROOT.parent / 'shared' / 'reference_scores'
RTOL = 0.005     # the brief's 0.5 %
VERSIONS = golden_update.VERSIONS


def paper_aggregates(benchmark, version='dreamerv3'):
    proto = aggregate.protocol(benchmark, version)
    scores = reference.final_scores(reference.curves(benchmark, version))
    if proto.normaliser:
        scores = aggregate.normalise(scores, reference.atari_baselines(proto.normaliser))
    return len(scores), aggregate.aggregates(scores)


def test_atari100k_human_normalised_mean_and_median():
    tasks, agg = paper_aggregates('atari100k')
    assert tasks == 26
    assert agg['mean'] == pytest.approx(1.245, rel=RTOL)
    assert agg['median'] == pytest.approx(0.480, rel=RTOL)


def test_dmc_proprio_and_vision_means():
    tasks, agg = paper_aggregates('dmc_proprio')
    assert tasks == 18 and agg['mean'] == pytest.approx(757.5, rel=RTOL)
    tasks, agg = paper_aggregates('dmc_vision')
    assert tasks == 20 and agg['mean'] == pytest.approx(785.6, rel=RTOL)


def test_older_papers_figures_stated_approximately_in_spec():
    # DreamerV2 Atari 200M: gamer-normalised median "about 2.1 to 2.2"; DreamerV1 DMC vision "about 805".
    tasks, agg = paper_aggregates('atari', 'dreamerv2')
    assert tasks == 55 and 2.1 <= agg['median'] <= 2.25
    tasks, agg = paper_aggregates('dmc_vision', 'dreamerv1')
    assert tasks == 20 and agg['mean'] == pytest.approx(805, rel=0.01)


def test_crafter_score_formula_by_hand():
    # Half the achievements always unlocked, half never: exp((ln 101 + ln 1) / 2) - 1 = sqrt(101) - 1.
    half = {name: float(i % 2) for i, name in enumerate(ACHIEVEMENTS)}
    assert crafter_score(half) == pytest.approx(math.sqrt(101) - 1, rel=1e-12)
    # Every achievement at 1 %: exp(ln 2) - 1 = 1 %; all at 100 %: 100 %.
    assert crafter_score(dict.fromkeys(ACHIEVEMENTS, 0.01)) == pytest.approx(1.0, rel=1e-12)
    assert crafter_score(dict.fromkeys(ACHIEVEMENTS, 1.0)) == pytest.approx(100.0, rel=1e-12)
    # Mixed rates (in %): 50, 10, 3 and nineteen 0s -> exp((ln 51 + ln 11 + ln 4) / 22) - 1.
    rates = dict.fromkeys(ACHIEVEMENTS, 0.0)
    rates.update(collect_wood=0.5, place_table=0.1, wake_up=0.03)
    expected = math.exp((math.log(51) + math.log(11) + math.log(4)) / 22) - 1
    assert crafter_score(rates) == pytest.approx(expected, rel=1e-12)


def test_crafter_human_experts_score_from_their_episodes():
    seeds = reference.crafter()['human_episodes']['seeds']
    runs = []
    for seed in seeds:
        # One episode per achievement pattern would do; rebuild per-episode flags that have these rates.
        episodes = seed['episodes']
        flags = {n: (np.arange(episodes) < round(seed['rates'][n] * episodes)).astype(float)
                 for n in ACHIEVEMENTS}
        runs.append({'task': 'reward', 'seed': seed['seed'], 'xs': np.arange(episodes) * 1000.0,
                     'ys': np.full(episodes, seed['reward']), 'achievements': flags})
    summary = aggregate.crafter_summary(runs)
    assert summary['seeds'] == 5
    assert summary['score'][0] == pytest.approx(50.5, abs=0.05)
    assert summary['score'][1] == pytest.approx(6.8, abs=0.05)
    board = reference.crafter()['scoreboard']['methods']
    assert board['human_experts']['score'] == [50.5, 6.8] and board['dreamerv3']['score'] == [14.5, 1.6]


@pytest.mark.skipif(not RAW.exists(), reason='the released scores (../shared/reference_scores) are absent')
def test_shipped_tables_are_what_the_derivation_script_writes(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / 'results' / 'derive_reference.py'),
                             f'--source={RAW}', f'--out={tmp_path}'], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    shipped = sorted(p.name for p in (ROOT / 'results' / 'reference').glob('*.json'))
    assert shipped == sorted(p.name for p in tmp_path.glob('*.json'))
    for name in shipped:
        assert (tmp_path / name).read_text() == (ROOT / 'results' / 'reference' / name).read_text(), name
    total = sum((ROOT / 'results' / 'reference' / name).stat().st_size for name in shipped)
    assert total < 1_000_000


# ---------------------------------------------------------------------------------------------
# The seeded training run


def golden_file(version):
    return json.loads(golden_update.golden_path(version).read_text())


def differences(golden, fresh, rtol, atol, episode_rtol=0.0):
    """Human-readable lines for every metric beyond the tolerance, appeared/vanished, or not finite."""
    lines = []
    for step in sorted(set(golden['train']) | set(fresh['train']), key=int):
        old, new = golden['train'].get(step, {}), fresh['train'].get(step, {})
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new:
                lines.append(f'step {step} {key}: only in the {"new run" if key in new else "golden file"}')
            elif not np.isclose(new[key], old[key], rtol=rtol, atol=atol):
                lines.append(f'step {step} {key}: golden {old[key]:.6g}, now {new[key]:.6g} '
                             f'({(new[key] - old[key]) / (abs(old[key]) or 1):+.2%})')
    old, new = np.array(golden['episodes']), np.array(fresh['episodes'])
    count_ok = abs(len(new) - len(old)) <= episode_rtol * len(old)
    mean_ok = len(new) and np.isclose(new[:, 1].mean(), old[:, 1].mean(), rtol=episode_rtol, atol=0)
    if not (count_ok and mean_ok):
        lines.append(f'episodes: golden {len(old)} with mean score {old[:, 1].mean():.4g}, now {len(new)}'
                     f' with mean {new[:, 1].mean() if len(new) else float("nan"):.4g}')
    return lines


def test_differences_reports_moved_missing_new_and_nonfinite_metrics():
    golden = {'train': {'300': {'train/loss/rec': 2.0, 'train/loss/kl': 1.0}}, 'episodes': [[10, 9.0]]}
    fresh = {'train': {'300': {'train/loss/rec': 2.001, 'train/loss/new': 1.0}}, 'episodes': [[10, 9.0]]}
    lines = differences(golden, fresh, rtol=1e-3, atol=1e-6)
    assert len(lines) == 2
    assert 'kl: only in the golden file' in lines[0] and 'new: only in the new run' in lines[1]
    fresh['train']['300'].update({'train/loss/kl': 1.0, 'train/loss/rec': 2.01})
    del fresh['train']['300']['train/loss/new']
    moved = differences(golden, fresh, rtol=1e-3, atol=1e-6)
    assert moved == ['step 300 train/loss/rec: golden 2, now 2.01 (+0.50%)']
    fresh['train']['300']['train/loss/rec'] = float('nan')
    assert len(differences(golden, fresh, rtol=1.0, atol=1.0)) == 1
    fresh['train']['300']['train/loss/rec'] = 2.0
    fresh['episodes'] = [[10, 9.0], [20, 9.0]]                        # one episode more: +100 %
    assert differences(golden, fresh, rtol=1e-3, atol=1e-6, episode_rtol=0.25)[0].startswith('episodes')


@pytest.mark.parametrize('version', VERSIONS)
def test_seeded_training_run_stays_within_rounding_proof_bounds(version, tmp_path):
    out = tmp_path / 'training.json'
    result = subprocess.run([sys.executable, str(ROOT / 'tests' / 'golden' / 'refresh.py'), f'--out={out}',
                             f'--version={version}', '--part=run'],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    golden, fresh = golden_file(version), json.loads(out.read_text())
    assert golden['config'] == fresh['config'], 'tests/golden/refresh.py changed: refresh the golden file'
    rows = fresh['run']['train'].values()
    assert len(rows) >= 4 and all('train/loss/total' in m for m in rows)
    tol = golden['run_tolerance']
    moved = differences(golden['run'], fresh['run'], **tol, episode_rtol=golden['episode_rtol'])
    refresh = f'python tests/golden/refresh.py --version={version}'
    assert not moved, (f'the seeded run left its bounds (rtol {tol["rtol"]}, atol {tol["atol"]}); if the '
                       f'change is intended, refresh with `{refresh}`:\n  ' + '\n  '.join(moved[:30]))


def assert_update_matches(version, fresh):
    golden = golden_file(version)
    moved = golden_update.differences(golden['update'], fresh, **golden['update_tolerance'])
    assert not moved, (f'{version}: the exact updates moved; if the change is intended, refresh with '
                       f'`python tests/golden/refresh.py --version={version}`:\n  ' + '\n  '.join(moved[:30]))


@pytest.mark.parametrize('version', VERSIONS)
def test_three_updates_from_fixed_weights_match_the_golden_file(version):
    assert_update_matches(version, golden_update.record(version))


# oneDNN picks kernels by CPU (AVX2, AVX-512, AMX); capping the ISA or turning oneDNN off here shows
# that a golden file written on one CPU holds on another.
KERNELS = {'avx2': {'ONEDNN_MAX_CPU_ISA': 'AVX2'}, 'avx512_core': {'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE'},
           'onednn_off': {'TF_ENABLE_ONEDNN_OPTS': '0'}}


@pytest.mark.parametrize('kernels', list(KERNELS))
def test_golden_updates_hold_under_other_cpu_kernels(kernels):
    env = {**os.environ, **KERNELS[kernels]}
    result = subprocess.run([sys.executable, str(ROOT / 'tests' / 'golden' / 'update.py'), '--check'],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def straight_through_without_stop_gradient(monkeypatch):
    # sample + p - p: the latent samples lose their straight-through gradient.
    from dreamer_tf import dists
    monkeypatch.setattr(dists, 'sg', lambda x: x)


# Changes to the math that a golden file must catch, each on one version's vector setup.
PLANTED = {
    'reward loss scale 1.0 -> 1.1': ('dreamerv3', {'loss.rew': 1.1}, None),
    'V3 free nats 1.0 -> 1.1': ('dreamerv3', {'loss.free_nats': 1.1}, None),
    'straight-through stop-gradient dropped': ('dreamerv3', {}, straight_through_without_stop_gradient),
    'V1 free nats 3.0 -> 2.9': ('dreamerv1', {'loss.free_nats': 2.9}, None),
}


@pytest.mark.parametrize('change', list(PLANTED))
def test_planted_math_changes_fail_the_golden_updates(change, monkeypatch):
    version, overrides, patch = PLANTED[change]
    if patch:
        patch(monkeypatch)
    setup = 'vector-discrete'
    fresh = {setup: golden_update.record_setup(version, setup, overrides)}
    golden = {setup: golden_file(version)['update'][setup]}
    moved = golden_update.differences(golden, fresh, **golden_file(version)['update_tolerance'])
    assert moved, f'{change}: the golden updates did not notice'
