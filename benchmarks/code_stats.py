"""Code-shape figures for the library: config branches, `.get` defaults, function and comment lengths.

    python benchmarks/code_stats.py                  # this tree
    python benchmarks/code_stats.py --root=/tmp/old  # another checkout, for a before/after table

A "config branch" is an `if`, conditional expression or `while` whose test reads the config (a name
or attribute mentioning config/cfg, a `self.x` assigned from the config in the class, or a
comparison with a string literal, as `kind == 'gaussian'` is).
"""

import ast
import io
import pathlib
import tokenize

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string('root', str(pathlib.Path(__file__).resolve().parents[1]), 'Repository root.')
flags.DEFINE_integer('longest', 8, 'How many of the longest functions to list.')

ALGORITHM = ('rssm', 'world_model', 'behavior', 'agent', 'nets', 'dists', 'ops', 'optim')


def docstring_lines(tree):
    lines = set()
    for node in ast.walk(tree):
        body = getattr(node, 'body', None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def comment_lines(source, docstrings):
    """Lines holding a `#` comment or part of a docstring."""
    return docstrings | {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                         if tok.type == tokenize.COMMENT}


def code_lines(source, docstrings):
    """Lines with code before any `#`, outside docstrings (a line with a trailing comment counts)."""
    return {i for i, line in enumerate(source.splitlines(), 1)
            if line.split('#')[0].strip() and i not in docstrings}


def _mentions_config(node):
    text = ast.unparse(node)
    return 'config' in text or 'cfg' in text


def config_attributes(tree):
    """`self.x` names assigned from an expression that reads the config."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _mentions_config(node.value):
            for target in node.targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) \
                            and sub.value.id == 'self':
                        names.add(sub.attr)
    return names


def reads_config(test, attributes):
    for sub in ast.walk(test):
        if isinstance(sub, (ast.Name, ast.Attribute)) and _mentions_config(sub):
            return True
        if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == 'self' \
                and sub.attr in attributes:
            return True
        if isinstance(sub, ast.Compare) and any(isinstance(c, ast.Constant) and isinstance(c.value, str)
                                                for c in [sub.left, *sub.comparators]):
            return True
    return False


def module_stats(path):
    source = path.read_text()
    tree = ast.parse(source)
    attributes = config_attributes(tree)
    branches = sum(isinstance(n, (ast.If, ast.IfExp, ast.While)) and reads_config(n.test, attributes)
                   for n in ast.walk(tree))
    gets = sum(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == 'get'
               and len(n.args) == 2 and _mentions_config(n.func.value) or
               isinstance(n, ast.Compare) and any(isinstance(o, (ast.In, ast.NotIn)) for o in n.ops)
               and _mentions_config(n.comparators[0]) for n in ast.walk(tree))
    functions = [(n.end_lineno - n.lineno + 1, n.name) for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    docstrings = docstring_lines(tree)
    comments = comment_lines(source, docstrings)
    code = code_lines(source, docstrings)
    return dict(lines=len(source.splitlines()), code=len(code), comments=len(comments),
                branches=branches, gets=gets, functions=functions)


def main(argv):
    del argv
    root = pathlib.Path(FLAGS.root) / 'dreamer_tf'
    paths = sorted(root.rglob('*.py'))
    print(f'{"module":28} {"lines":>5} {"code":>5} {"comm":>5} {"c/code":>6} {"branch":>6} {"get/in":>6} '
          f'{"longest fn":>10}')
    totals, everything, long_files = dict(branches=0, gets=0, code=0, comments=0), [], 0
    for path in paths:
        s = module_stats(path)
        long_files += s['lines'] > 450
        name = str(path.relative_to(root))
        longest = max(s['functions'], default=(0, ''))
        everything += [(n, f'{name}:{f}') for n, f in s['functions']]
        for key in totals:
            totals[key] += s[key]
        print(f'{name:28} {s["lines"]:5d} {s["code"]:5d} {s["comments"]:5d} '
              f'{s["comments"] / max(s["code"], 1):6.2f} {s["branches"]:6d} {s["gets"]:6d} {longest[0]:10d}')
    print(f'{"total":28} {"":5} {totals["code"]:5d} {totals["comments"]:5d} '
          f'{totals["comments"] / max(totals["code"], 1):6.2f} {totals["branches"]:6d} {totals["gets"]:6d}')
    algorithm = [(n, f) for n, f in everything if f.split('.py')[0] in ALGORITHM]
    print(f'\nlongest functions in the algorithm modules ({", ".join(ALGORITHM)}):')
    for n, f in sorted(algorithm, reverse=True)[:FLAGS.longest]:
        print(f'  {n:4d}  {f}')
    print(f'over 40 lines there: {sum(n > 40 for n, _ in algorithm)}; '
          f'library files over 450 lines: {long_files}')


if __name__ == '__main__':
    app.run(main)
