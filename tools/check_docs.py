"""Check that every docs page renders: nbdev_proc_nbs (what Quarto would render), `jupyter nbconvert --to html` per
page, then headless Chromium loads each page (plotly.js served from the installed plotly package instead of its CDN,
since this machine has no internet) and counts the plotly figures actually drawn (`.main-svg`) against the figures the
page holds; every figure with animation frames (the round-by-round sliders) is played frame by frame in the page, and
each frame must animate without an error.

Usage: python tools/check_docs.py [--chromium /usr/bin/chromium] [--out _docs_check]"""
import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]


PLAY_FRAMES = """<script>
// headless Chromium runs no animation frames under a virtual-time budget (seen with Chromium 150): schedule them on
// timers, which virtual time does advance, so that Plotly.animate runs its frames as in a browser on screen
window.requestAnimationFrame = function (cb) { return setTimeout(function () { cb(performance.now()); }, 16); };
window.cancelAnimationFrame = function (id) { clearTimeout(id); };
window.addEventListener('load', function () { setTimeout(async function () {
  const out = [], pre = document.createElement('pre'); pre.id = 'fedland-frames'; document.body.appendChild(pre);
  const show = () => { pre.textContent = JSON.stringify(out); };
  const wait = (ms) => new Promise(r => setTimeout(() => r('timeout'), ms));
  show();
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    const fr = (gd._transitionData && gd._transitionData._frames) || [];
    if (!fr.length) continue;
    const rec = {frames: fr.length, played: 0, timeouts: 0}; out.push(rec);
    for (const f of fr) {
      try {   // a frame that neither resolves nor rejects counts as not played (and cannot stall the rest)
        const opts = {mode: 'immediate', frame: {duration: 0, redraw: true}, transition: {duration: 0}};
        const r = await Promise.race([Plotly.animate(gd, [f.name], opts), wait(2000)]);
        if (r === 'timeout') rec.timeouts++; else rec.played++;
      } catch (e) {}
      show();
    }
  }
  show();
}, 2000); });
</script>"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--chromium', default=shutil.which('chromium') or '/usr/bin/chromium')
    ap.add_argument('--out', default=str(root / '_proc' / 'html'))
    a = ap.parse_args()
    bindir = Path(sys.executable).parent
    subprocess.run([str(bindir / 'nbdev_proc_nbs')], cwd=root, check=True, capture_output=True)
    proc, out = root / '_proc', Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import plotly
    pjs = Path(plotly.__file__).parent / 'package_data' / 'plotly.min.js'
    shutil.copy(pjs, out / 'plotly.min.js')
    rows, bad = [], 0
    for nb in sorted(proc.glob('*.ipynb')):
        html = out / (nb.stem + '.html')
        subprocess.run(
            [str(bindir / 'jupyter'), 'nbconvert', '--to', 'html', '--output-dir', str(out), str(nb)],
            check=True,
            capture_output=True,
        )
        text = html.read_text()
        expected = text.count('Plotly.newPlot')
        # notebook_connected loads plotly.js from its CDN (an ES-module import or a script tag): point it at the local
        # copy
        text = re.sub(
            r'<script type="module">import "https://cdn\.plot\.ly/plotly-[0-9.]+(\.min)?(\.js)?"</script>',
            '<script src="plotly.min.js"></script>',
            text,
        )
        text = re.sub(r'https://cdn\.plot\.ly/plotly-[0-9.]+(\.min)?\.js', 'plotly.min.js', text)
        animated = text.count('addFrames')
        if animated: text = text.replace('</body>', PLAY_FRAMES + '</body>')
        html.write_text(text)
        dom = subprocess.run(
            [
                a.chromium,
                '--headless',
                '--no-sandbox',
                '--disable-gpu',
                '--disable-background-networking',
                '--disable-component-update',
                '--no-first-run',
                '--virtual-time-budget=15000',
                '--dump-dom',
                html.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        drawn = len(re.findall(r'class="main-svg"', dom)) // 2     # plotly draws two .main-svg layers per figure
        tables = dom.count('<table')
        m = re.search(r'<pre id="fedland-frames">(.*?)</pre>', dom, re.S)
        played = json.loads(m.group(1).replace('&quot;', '"')) if m else []
        frames_ok = len(played) == animated and all(p['played'] == p['frames'] > 0 for p in played)
        ok = drawn >= expected and len(dom) > 1000 and frames_ok
        bad += not ok
        rows.append(dict(page=nb.stem, figures=expected, drawn=drawn, tables=tables, animated=animated,
                         frames=sum(p['frames'] for p in played), played=sum(p['played'] for p in played), ok=ok))
    w = max(len(r['page']) for r in rows)
    for r in rows:
        anim = f"  slider frames {r['played']}/{r['frames']} played" if r['animated'] else ''
        verdict = 'ok' if r['ok'] else 'NOT RENDERED'
        counts = f"figures {r['figures']:>2}  drawn {r['drawn']:>2}  tables {r['tables']:>2}"
        print(f"{r['page']:<{w}}  {counts}{anim}  {verdict}")
    print(
        json.dumps(
            {
                'pages': len(rows),
                'failed': bad,
                'figures': sum(r['figures'] for r in rows),
                'frames': sum(r['frames'] for r in rows),
            }
        )
    )
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
