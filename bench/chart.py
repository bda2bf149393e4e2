"""Hand-written SVG: the control-latency distributions (CDF, log time axis). No dependencies."""
import math

COLORS = {"http/process": "#1f77b4", "grpc/process": "#2ca02c", "http/container": "#17becf",
          "grpc/container": "#98df8a", "docker/container": "#d62728",
          "http-py/process": "#aec7e8", "http-py/container": "#9edae5", "docker-py/container": "#ff9896"}


def write(path, control):
    series = {k: sorted(v["raw"]) for k, v in control.items() if isinstance(v, dict) and v.get("raw")}
    W, H, L, T, Rm, B = 860, 460, 70, 40, 220, 50
    pw, ph = W - L - Rm, H - T - B
    lo = min(min(v) for v in series.values())
    hi = max(max(v) for v in series.values())
    x0 = 10 ** math.floor(math.log10(max(lo, 1)))
    x1 = 10 ** math.ceil(math.log10(hi))

    def X(us):
        return L + pw * (math.log10(max(us, x0)) - math.log10(x0)) / (math.log10(x1) - math.log10(x0))

    def Y(q):
        return T + ph * (1 - q)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{L}" y="22" font-size="15">Control latency: request sent → new quota readable in the cgroup file (CDF)</text>']
    d = x0
    while d <= x1:
        x = X(d)
        out.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{T + ph}" stroke="#ddd"/>')
        label = f"{d / 1000:g} ms" if d >= 1000 else f"{d:g} µs"
        out.append(f'<text x="{x:.1f}" y="{T + ph + 16}" text-anchor="middle">{label}</text>')
        d *= 10
    for q in (0, 0.25, 0.5, 0.75, 0.9, 0.99, 1):
        y = Y(q)
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + pw}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{q:g}</text>')
    out.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{L + pw / 2}" y="{H - 10}" text-anchor="middle">latency (log scale)</text>')
    out.append(f'<text x="16" y="{T + ph / 2}" transform="rotate(-90 16 {T + ph / 2})" text-anchor="middle">fraction of updates</text>')
    for i, (k, v) in enumerate(series.items()):
        n = len(v)
        step = max(1, n // 600)
        pts = [(X(v[j]), Y((j + 1) / n)) for j in range(0, n, step)] + [(X(v[-1]), Y(1))]
        c = COLORS.get(k, "#555")
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                   % (c, " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)))
        ly = T + 10 + 34 * i
        p50, p99 = control[k]["p50"], control[k]["p99"]
        out.append(f'<line x1="{L + pw + 12}" y1="{ly}" x2="{L + pw + 36}" y2="{ly}" stroke="{c}" stroke-width="3"/>')
        out.append(f'<text x="{L + pw + 42}" y="{ly + 4}">{k}</text>')
        out.append(f'<text x="{L + pw + 42}" y="{ly + 18}" fill="#555">p50 {fmt(p50)}, p99 {fmt(p99)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def fmt(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"
