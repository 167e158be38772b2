"""Task lists and seeds of the paper benchmarks, per agent version.

`reproduce/<benchmark>.py --task=all` runs every (task, seed) of `benchmark_runs`
one after another. The seeds are those of the authors' released score files
(../shared/reference_scores), where runs are seeded 0, 1, 2, ...:

| benchmark (overlay) | tasks | seeds | source |
|---|---|---|---|
| atari100k | 26 games | 5 | atari100k-dreamerv3.json.gz: 5 seeds for every game |
| atari (200M) | 57 games | 5 | atari57-dreamerv3.json.gz holds 3 to 6 seeds per game (5 is the median) |
| dmc_proprio | 18 tasks | 5 | dmc_proprio-dreamerv3.json.gz |
| dmc_vision | 20 tasks | 10 | dmc_vision-dreamerv3.json.gz: 10 seeds for 18 of the 20 tasks |
| crafter | reward | 10 | the DreamerV3 paper's Crafter runs; no score file here |

DreamerV1 (DMC vision, 20 tasks) and DreamerV2 (Atari, DMC vision) run 5 seeds, as in their
released score files (results/reference: dmc_vision-dreamerv1, atari200m-dreamerv2 with 55 of the 57
games, dmc_vision-dreamerv2). The 2023 DreamerV3 preset runs the V3 lists. Benchmarks a paper did not
run keep the V3 task list with 3 seeds (this project's choice, for comparisons).
"""

from __future__ import annotations

from dreamer_tf.envs.atari import ATARI57_GAMES, ATARI100K_GAMES
from dreamer_tf.envs.crafter import CRAFTER_TASKS
from dreamer_tf.envs.dmc import DMC_PROPRIO_TASKS, DMC_VISION_TASKS

# version -> benchmark overlay -> (tasks, seeds)
BENCHMARKS = {
    'dreamerv3': {
        'atari100k': (ATARI100K_GAMES, tuple(range(5))),
        'atari': (ATARI57_GAMES, tuple(range(5))),
        'dmc_proprio': (DMC_PROPRIO_TASKS, tuple(range(5))),
        'dmc_vision': (DMC_VISION_TASKS, tuple(range(10))),
        'crafter': (CRAFTER_TASKS, tuple(range(10))),
    },
}


_V3 = BENCHMARKS['dreamerv3']
BENCHMARKS['dreamerv3_2023'] = dict(_V3)
BENCHMARKS['dreamerv1'] = {name: (tasks, tuple(range(3))) for name, (tasks, _) in _V3.items()}
BENCHMARKS['dreamerv1']['dmc_vision'] = (DMC_VISION_TASKS, tuple(range(5)))
BENCHMARKS['dreamerv2'] = {**BENCHMARKS['dreamerv1'],
                           'atari': (ATARI57_GAMES, tuple(range(5))),
                           'dmc_vision': (DMC_VISION_TASKS, tuple(range(5))),
                           'dmc_proprio': (DMC_PROPRIO_TASKS, tuple(range(5)))}


def benchmark_runs(version: str, benchmark: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The (tasks, seeds) a paper reports for `benchmark` under agent `version`."""
    if version not in BENCHMARKS:
        raise ValueError(f'version {version!r} has no paper task lists; lists exist for: '
                         f'{", ".join(BENCHMARKS)}.')
    table = BENCHMARKS[version]
    if benchmark not in table:
        raise ValueError(f'benchmark {benchmark!r} has no paper task list for {version}; '
                         f'lists exist for: {", ".join(table)}.')
    return table[benchmark]
