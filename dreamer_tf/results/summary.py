"""The Markdown of `plots.report`: per-task final scores and aggregates with bootstrap intervals."""

from __future__ import annotations

import numpy as np

from dreamer_tf.results import aggregate, reference


def _fmt(value):
    if value is None or not np.isfinite(value):
        return '-'
    return f'{value:.3g}' if abs(value) < 10 else f'{value:.1f}'


def _aggregate_rows(ours, paper, reps):
    rows = ['| aggregate | ours | ours 95% CI | paper | paper 95% CI |', '|---|---|---|---|---|']
    ours_agg = aggregate.aggregates(ours) if ours else {}
    ours_ci = aggregate.bootstrap_ci(ours, reps) if ours else {}
    paper_agg = aggregate.aggregates(paper) if paper else {}
    paper_ci = aggregate.bootstrap_ci(paper, reps) if paper else {}
    for name in ('mean', 'median', 'iqm'):
        ci = ours_ci.get(name, (None, None))
        pci = paper_ci.get(name, (None, None))
        rows.append(f'| {name} | {_fmt(ours_agg.get(name))} | [{_fmt(ci[0])}, {_fmt(ci[1])}] | '
                    f'{_fmt(paper_agg.get(name))} | [{_fmt(pci[0])}, {_fmt(pci[1])}] |')
    return rows, ours_agg, paper_agg


def score_summary(runs, table, proto, benchmark, version, baselines=None, reps=2000):
    """Markdown lines and a dict of the aggregates: per-task final scores and mean/median/IQM."""
    ours_raw = aggregate.task_scores(runs, proto)
    paper_raw = reference.final_scores(table) if table else {}
    norm = (lambda s: aggregate.normalise(s, baselines)) if baselines else (lambda s: s)
    ours, paper = norm(ours_raw), norm(paper_raw)
    short = sorted({int(r['end']) for r in runs if r['end'] and r['end'] < proto.budget})
    lines = [f'# {benchmark} ({version}): our runs against the paper', '',
             f'{len(runs)} runs over {len(ours_raw)} tasks. A run scores the mean return of the training '
             f'episodes that ended in the last {proto.window:,.0f} steps of its budget ({proto.budget:,.0f}; '
             'the last earlier episode if none did); a task scores the mean over its seeds.']
    if short:
        lines.append(f'Runs shorter than the budget are scored at their own end ({short} steps), so they '
                     'are not comparable with the paper.')
    if baselines:
        lines.append(f'Scores are normalised as (score - random) / (human - random) ({proto.normaliser}).')
    rows, ours_agg, paper_agg = _aggregate_rows(ours, {t: paper[t] for t in paper}, reps)
    lines += ['', '## Aggregates', '', *rows, '',
              'mean and median are over per-task means; IQM over all (task, seed) scores; intervals: '
              f'percentile bootstrap over seeds within tasks ({reps} resamples).', '', '## Per task', '',
              '| task | seeds | ours (mean +- std) | paper mean [min, max] over seeds |'
              + (' ours normalised | paper normalised |' if baselines else ''),
              '|---|---|---|---|' + ('---|---|' if baselines else '')]
    for task in sorted(set(ours_raw) | set(paper_raw)):
        mine, theirs = ours_raw.get(task), paper_raw.get(task)
        row = (f'| {task} | {len(mine) if mine is not None else 0} | '
               + (f'{_fmt(mine.mean())} +- {_fmt(mine.std())}' if mine is not None else '-') + ' | '
               + (f'{_fmt(theirs.mean())} [{_fmt(theirs.min())}, {_fmt(theirs.max())}]'
                  if theirs is not None else '-') + ' |')
        if baselines:
            row += (f' {_fmt(np.mean(ours[task])) if task in ours else "-"} |'
                    f' {_fmt(np.mean(paper[task])) if task in paper else "-"} |')
        lines.append(row)
    return lines, {'ours': ours_agg, 'paper': paper_agg}


def crafter_summary_lines(summary, crafter_reference):
    board = crafter_reference['scoreboard']['methods']
    human = crafter_reference['human_episodes']['seeds']
    lines = ['# crafter: our runs against the scoreboard', '',
             f"{summary['seeds'] if summary else 'No'} runs. Success rates count every training episode of "
             'the budget (1M steps); score = exp(mean over the 22 achievements of ln(1 + rate in %)) - 1; '
             'mean +- std over seeds.', '', '| method | score (%) | reward |', '|---|---|---|']
    if summary:
        lines.append(f"| ours | {summary['score'][0]:.1f} +- {summary['score'][1]:.1f} | "
                     f"{summary['reward'][0]:.1f} +- {summary['reward'][1]:.1f} |")
    for method, entry in board.items():
        reward = f"{entry['reward'][0]} +- {entry['reward'][1]}" if entry['reward'] else '-'
        lines.append(f"| {method} (paper) | {entry['score'][0]} +- {entry['score'][1]} | {reward} |")
    lines += ['', '| achievement | ours (%) | human experts (%) |', '|---|---|---|']
    for name in human[0]['rates']:
        mine = f"{100 * summary['rates'][name]:.2f}" if summary else '-'
        lines.append(f"| {name} | {mine} | {100 * np.mean([s['rates'][name] for s in human]):.2f} |")
    return lines
