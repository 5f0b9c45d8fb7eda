"""House style that ruff does not check: public seams between modules (no `_private` name crosses a module, no script
rebinds a library global)."""
import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_sources():
    "Every checked Python file as (label, module it belongs to or None, source)."
    for d in ('fedland', 'bench', 'tools', 'tests'):
        for p in sorted((ROOT / d).glob('*.py')):
            if p.name != '_modidx.py':
                yield str(p.relative_to(ROOT)), f'fedland.{p.stem}' if d == 'fedland' else None, p.read_text()


def notebook_sources():
    "Every notebook's code cells, with the module the notebook exports to (its own private names are its to test)."
    for p in sorted((ROOT / 'nbs').glob('*.ipynb')):
        cells = [''.join(c['source']) for c in json.loads(p.read_text())['cells'] if c['cell_type'] == 'code']
        own = next((c.split()[2] for c in cells if c.startswith('#| default_exp')), None)
        magic = ('%', '!')   # IPython lines, not Python
        code = '\n'.join(ln for c in cells for ln in c.splitlines() if not ln.lstrip().startswith(magic))
        yield str(p.relative_to(ROOT)), own and f'fedland.{own}', code


def private_crossings(source: str, own: str | None) -> list:
    "`from fedland.x import _y`, `fedland.x._y` and `x._y = …` where fedland.x is another module than `own`."
    tree, aliases, found = ast.parse(source), {}, []
    private = lambda n: n.startswith('_') and not n.startswith('__')
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module:
            mod = n.module if not n.level else f'fedland.{n.module}'
            if mod.startswith('fedland'):
                found += [f'{n.lineno}: from {mod} import {a.name}' for a in n.names if private(a.name) and mod != own]
                aliases.update({a.asname or a.name: f'{mod}.{a.name}' for a in n.names})
        elif isinstance(n, ast.Import):
            aliases.update({a.asname or a.name: a.name for a in n.names if a.name.startswith('fedland')})
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute):
            mod = aliases.get(ast.unparse(n.value)) or ast.unparse(n.value)
            if mod.startswith('fedland') and mod != own and (private(n.attr) or isinstance(n.ctx, ast.Store)):
                found.append(f"{n.lineno}: {ast.unparse(n)}{' = …' if isinstance(n.ctx, ast.Store) else ''}")
    return found


def test_no_private_name_crosses_a_module():
    sources = [*python_sources(), *notebook_sources()]
    bad = {label: f for label, own, src in sources if (f := private_crossings(src, own))}
    assert not bad, f'private names used across modules (give them a public name and a docstring): {bad}'


def test_the_checker_sees_crossings():
    assert private_crossings('from fedland.train import _batched_chunk', 'fedland.valuation')
    assert private_crossings('from .models import _conv', 'fedland.landscape')
    assert private_crossings('import fedland.train as t\nt.local_update = None', None)       # a rebound global
    assert private_crossings('import fedland.models\nfedland.models._GRAPHS.clear()', None)
    assert not private_crossings('from fedland.train import _flat_copy', 'fedland.train')    # a module's own tests
    assert not private_crossings('from fedland.train import local_update', None)
