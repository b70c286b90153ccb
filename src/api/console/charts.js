// formpush admin console: the charts, drawn as SVG by the page itself (no chart library,
// nothing from other origins). Each chart is drawn for its container's width and drawn
// again when that width changes, so that text keeps its size on a phone.
//
// The texts a chart shows (titles, labels, legends) are given by the caller, already
// translated; a label produced by Intl (a date, a number) is marked data-l10n="intl".
'use strict';

window.FormpushCharts = (() => {
  // The SVG namespace, read from a parsed <svg> rather than spelled out.
  const probe = document.createElement('template');
  probe.innerHTML = '<svg></svg>';
  const NS = probe.content.firstChild.namespaceURI;

  function svgEl(tag, attrs, ...children) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false) e.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // A label: plain text from a catalogue, or {text, intl: true} for Intl output.
  function text(attrs, label) {
    const node = svgEl('text', attrs);
    if (label && typeof label === 'object') {
      node.textContent = label.text;
      if (label.intl) node.setAttribute('data-l10n', 'intl');
    } else {
      node.textContent = label;
    }
    return node;
  }

  const labelText = (label) => (label && typeof label === 'object' ? label.text : String(label || ''));

  // Round axis steps: 1, 2, 2.5 or 5 times a power of ten.
  function niceMax(max, ticks) {
    if (max <= 0) return { top: ticks, step: 1 };
    const raw = max / ticks;
    const pow = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * pow).find((s) => s >= raw && (s >= 1 || pow < 1));
    const whole = Math.max(1, Math.ceil(step));
    return { top: whole * ticks, step: whole };
  }

  const observed = new WeakMap();
  const resize = typeof ResizeObserver === 'function'
    ? new ResizeObserver((entries) => {
      for (const entry of entries) {
        const state = observed.get(entry.target);
        if (state && Math.abs(entry.contentRect.width - state.width) >= 1) state.draw();
      }
    })
    : null;

  // Draws `draw(width)` into the container now and whenever its width changes.
  function mount(container, draw) {
    const state = { width: 0, draw: null };
    state.draw = () => {
      state.width = container.clientWidth || 320;
      container.replaceChildren(...draw(state.width));
    };
    observed.set(container, state);
    state.draw();
    if (resize) resize.observe(container);
  }

  function legend(series) {
    const list = document.createElement('ul');
    list.className = 'legend';
    for (const s of series) {
      const item = document.createElement('li');
      const swatch = document.createElement('span');
      swatch.className = 'swatch ' + s.cls;
      swatch.setAttribute('aria-hidden', 'true');
      const label = document.createElement('span');
      label.textContent = s.label;
      item.append(swatch, label);
      list.append(item);
    }
    return list;
  }

  function empty(message) {
    const p = document.createElement('p');
    p.className = 'chart-empty';
    p.textContent = message;
    return p;
  }

  /**
   * Vertical bars, stacked by series.
   * spec: {
   *   buckets: [{label: text|{text,intl}|null, title: string, values: {key: n}}],
   *   series: [{key, label, cls}],
   *   fmt(n): a number for a tooltip or axis, compact(n): a short one for the axis,
   *   ariaLabel, emptyText, legend: bool, height (px, default 200), testid
   * }
   * Buckets with a label are the candidates for the x axis; as many are shown as fit,
   * evenly spaced.
   */
  function bars(container, spec) {
    mount(container, (width) => {
      const total = spec.buckets.reduce((sum, b) => sum +
        spec.series.reduce((s, se) => s + (Number(b.values[se.key]) || 0), 0), 0);
      if (!spec.buckets.length || (total === 0 && spec.emptyWhenZero)) return [empty(spec.emptyText)];
      const height = spec.height || 200;
      const sums = spec.buckets.map((b) => spec.series.reduce((s, se) => s + (Number(b.values[se.key]) || 0), 0));
      const { top, step } = niceMax(Math.max(...sums), 4);
      const yLabels = [];
      for (let v = 0; v <= top; v += step) yLabels.push({ v, text: spec.compact(v) });
      const left = Math.max(...yLabels.map((l) => l.text.length)) * 7 + 12;
      const right = 8;
      const plotTop = 10;
      const plotBottom = height - 26;
      const plotW = Math.max(40, width - left - right);
      const n = spec.buckets.length;
      const slot = plotW / n;
      const gap = slot > 6 ? Math.min(6, slot * 0.2) : 0.5;
      const y = (v) => plotBottom - ((plotBottom - plotTop) * v) / top;
      const svg = svgEl('svg', {
        class: 'chart-svg', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
        'aria-label': spec.ariaLabel, 'data-testid': spec.testid,
      });
      for (const l of yLabels) {
        svg.append(svgEl('line', { class: 'grid', x1: left, x2: left + plotW, y1: y(l.v), y2: y(l.v) }));
        svg.append(text({ class: 'axis', x: left - 6, y: y(l.v) + 4, 'text-anchor': 'end' },
          { text: l.text, intl: true }));
      }
      spec.buckets.forEach((b, i) => {
        const g = svgEl('g', { class: 'bar', 'data-index': i, 'data-total': sums[i] });
        let acc = 0;
        for (const se of spec.series) {
          const v = Number(b.values[se.key]) || 0;
          if (!v) continue;
          const y0 = y(acc);
          acc += v;
          const y1 = y(acc);
          g.append(svgEl('rect', {
            class: 'seg ' + se.cls, x: left + i * slot + gap / 2, width: Math.max(0.5, slot - gap),
            y: y1, height: Math.max(0.5, y0 - y1), 'data-series': se.key, 'data-value': v,
          }));
        }
        // The whole column answers the pointer, with the bucket's numbers as its tooltip.
        g.append(svgEl('rect', {
          class: 'hit', x: left + i * slot, width: slot, y: plotTop, height: plotBottom - plotTop,
        }, svgEl('title', null, b.title)));
        if (b.highlight) g.classList.add('highlight');
        svg.append(g);
      });
      svg.append(svgEl('line', { class: 'baseline', x1: left, x2: left + plotW, y1: plotBottom, y2: plotBottom }));
      // X labels: as many of the candidates as fit, evenly spaced.
      const candidates = spec.buckets.map((b, i) => ({ b, i })).filter(({ b }) => b.label !== null && b.label !== undefined);
      const widest = Math.max(1, ...candidates.map(({ b }) => labelText(b.label).length));
      const fits = Math.max(1, Math.floor(plotW / (widest * 7.5 + 10)));
      const every = Math.max(1, Math.ceil(candidates.length / fits));
      candidates.forEach(({ b, i }, k) => {
        if (k % every) return;
        svg.append(text({
          class: 'axis', x: left + i * slot + slot / 2, y: height - 8, 'text-anchor': 'middle',
        }, b.label));
      });
      const out = [svg];
      if (spec.legend) out.push(legend(spec.series));
      return out;
    });
  }

  /**
   * Horizontal bars, one row per category, each with its count and share of the total.
   * spec: {rows: [{key, label, value, cls, detail: string|null}], fmt(n), pct(x),
   *        ariaLabel, emptyText, testid}
   */
  function breakdown(container, spec) {
    mount(container, (width) => {
      const total = spec.rows.reduce((s, r) => s + r.value, 0);
      if (!total) return [empty(spec.emptyText)];
      const rowH = 40;
      const height = spec.rows.length * rowH + 4;
      const valueW = 110;
      const barW = Math.max(40, width - valueW - 8);
      const svg = svgEl('svg', {
        class: 'chart-svg', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
        'aria-label': spec.ariaLabel, 'data-testid': spec.testid,
      });
      spec.rows.forEach((r, i) => {
        const top = i * rowH;
        const g = svgEl('g', { class: 'row', 'data-key': r.key, 'data-value': r.value });
        g.append(text({ class: 'row-label', x: 0, y: top + 14 }, r.label));
        g.append(svgEl('rect', { class: 'track', x: 0, y: top + 20, width: barW, height: 12, rx: 3 }));
        g.append(svgEl('rect', {
          class: 'seg ' + r.cls, x: 0, y: top + 20, height: 12, rx: 3,
          width: Math.max(r.value ? 2 : 0, (barW * r.value) / total),
        }));
        g.append(text({ class: 'row-value', x: width - 2, y: top + 31, 'text-anchor': 'end' },
          { text: `${spec.fmt(r.value)} · ${spec.pct(r.value / total)}`, intl: true }));
        if (r.detail) g.append(svgEl('title', null, r.detail));
        svg.append(g);
      });
      return [svg];
    });
  }

  // Empties a chart's box and forgets its drawing, so that a resize (such as the box's view
  // being shown again) does not bring an old chart back.
  function clear(container) {
    observed.delete(container);
    container.replaceChildren();
  }

  return { bars, breakdown, clear };
})();
