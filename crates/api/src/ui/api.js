// The agent's HTTP API from the browser: JSON calls and Server-Sent Events streams, with the
// session cookie (same origin) and the header that mutating session requests must carry.

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code;
    this.field = error?.field;
  }
}

/** Listeners for a 401 anywhere: the session ended. */
export const onUnauthorized = new Set();

export async function api(method, path, body) {
  const headers = { Accept: 'application/json', 'X-Nodeagent-Console': '1' };
  const opts = { method, headers, credentials: 'same-origin' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let v = null;
  try { v = text ? JSON.parse(text) : null; } catch { v = { error: { message: text } }; }
  if (!r.ok) {
    if (r.status === 401) onUnauthorized.forEach((f) => f());
    throw new ApiError(r.status, v?.error);
  }
  return v;
}

/**
 * Follows an SSE route with fetch (so that any event name arrives, and a 401 is seen), calling
 * onEvent({event, id, data}) per event. Reconnects a second after the stream ends or fails,
 * from the last id when `resume(id)` gives a new path. Returns a function that stops it.
 */
export function stream(path, onEvent, { onState, resume } = {}) {
  const ctl = { stopped: false, abort: null };
  let current = path;
  (async () => {
    while (!ctl.stopped) {
      const ac = new AbortController();
      ctl.abort = () => ac.abort();
      try {
        const r = await fetch(current, { headers: { Accept: 'text/event-stream' }, credentials: 'same-origin', signal: ac.signal });
        if (r.status === 401) { onUnauthorized.forEach((f) => f()); return; }
        if (r.status === 404) { onEvent({ event: 'gone', data: '{}' }); return; }
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        onState?.(true);
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true }).replace(/\r/g, '');
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const ev = { event: 'message', id: null, data: '' };
            const data = [];
            for (const line of block.split('\n')) {
              if (!line || line.startsWith(':')) continue;
              const c = line.indexOf(':');
              const k = c < 0 ? line : line.slice(0, c);
              let v = c < 0 ? '' : line.slice(c + 1);
              if (v.startsWith(' ')) v = v.slice(1);
              if (k === 'event') ev.event = v; else if (k === 'id') ev.id = v; else if (k === 'data') data.push(v);
            }
            if (!data.length) continue;
            ev.data = data.join('\n');
            if (ev.id && resume) current = resume(ev.id) || current;
            if (onEvent(ev) === false) { ctl.stopped = true; ac.abort(); return; }
          }
        }
      } catch (e) {
        if (ctl.stopped) return;
      }
      onState?.(false);
      if (!ctl.stopped) await new Promise((res) => setTimeout(res, 1000));
    }
  })();
  return () => { ctl.stopped = true; ctl.abort?.(); };
}

export function seg(s) { return encodeURIComponent(s); }

export function bytes(n) {
  if (n == null) return '-';
  const u = ['B', 'Ki', 'Mi', 'Gi', 'Ti'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v}B` : `${v.toFixed(v < 10 ? 1 : 0)}${u[i]}`;
}

export function tsNanos(ts) {
  // RFC 3339 with up to nanoseconds; Date parses milliseconds only.
  const m = /\.(\d+)Z$/.exec(ts);
  const ms = Date.parse(ts);
  if (Number.isNaN(ms)) return null;
  const frac = m ? Number((m[1] + '000000000').slice(3, 9)) : 0;
  return ms * 1e6 + frac;
}

/** CPU cores between two samples, or null. */
export function cores(prev, cur) {
  if (!prev || !cur || prev.cpu_usage_ns == null || cur.cpu_usage_ns == null) return null;
  const dt = tsNanos(cur.ts) - tsNanos(prev.ts);
  const du = cur.cpu_usage_ns - prev.cpu_usage_ns;
  return dt > 0 && du >= 0 ? du / dt : null;
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}
