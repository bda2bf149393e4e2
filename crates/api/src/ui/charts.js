// Live charts on uPlot: a time series chart that takes points as they come and redraws at most
// ten times a second (so a 10 ms object's 100 samples a second cost ten draws), keeping at most
// `maxPoints` points (older ones drop off the left), and a bare sparkline for table rows.

import uPlot from './vendor/uplot/uPlot.esm.js';

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];

export class LiveChart {
  constructor(parent, { title, series, width = 460, height = 180, fmt = (v) => v, maxPoints = 2000, yMin }) {
    this.maxPoints = maxPoints;
    this.data = [[], ...series.map(() => [])];
    this.pending = false;
    this.lastDraw = 0;
    const opts = {
      title, width, height,
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: yMin === undefined ? {} : { range: (u, mn, mx) => [yMin, Math.max(mx * 1.1, yMin + 1e-9)] } },
      axes: [{}, { values: (u, vals) => vals.map(fmt), size: 70 }],
      series: [{}, ...series.map((s, i) => ({
        label: s.label, stroke: s.stroke || COLORS[i % COLORS.length], width: 1.5,
        dash: s.dash, value: (u, v) => (v == null ? '-' : fmt(v)),
      }))],
    };
    this.u = new uPlot(opts, this.data, parent);
  }
  /** Adds one point: t in seconds, one value per series. */
  push(t, values) {
    const d = this.data;
    d[0].push(t);
    values.forEach((v, i) => d[i + 1].push(v));
    if (d[0].length > this.maxPoints) {
      const cut = d[0].length - this.maxPoints;
      for (const a of d) a.splice(0, cut);
    }
    this.schedule();
  }
  schedule() {
    if (this.pending) return;
    this.pending = true;
    const wait = Math.max(0, 100 - (performance.now() - this.lastDraw));
    setTimeout(() => requestAnimationFrame(() => {
      this.pending = false;
      this.lastDraw = performance.now();
      this.u.setData(this.data);
    }), wait);
  }
  get points() { return this.data[0].length; }
  destroy() { this.u.destroy(); }
}

export class Sparkline {
  constructor(parent, { width = 120, height = 26, max = 60 } = {}) {
    this.max = max;
    this.data = [[], []];
    this.u = new uPlot({
      width, height, legend: { show: false }, cursor: { show: false },
      scales: { x: { time: false }, y: { range: (u, mn, mx) => [0, Math.max(mx, 0.01)] } },
      axes: [{ show: false }, { show: false }],
      series: [{}, { stroke: '#2563eb', width: 1, fill: 'rgba(37,99,235,0.15)' }],
      padding: [2, 0, 2, 0],
    }, this.data, parent);
  }
  push(v) {
    const [x, y] = this.data;
    x.push(x.length ? x[x.length - 1] + 1 : 0);
    y.push(v);
    if (x.length > this.max) { x.shift(); y.shift(); }
    this.u.setData(this.data);
  }
  destroy() { this.u.destroy(); }
}
