#!/usr/bin/env node
/**
 * Hostile-client probes against `recdistill serve`, loopback only. Each probe starts its own server from a source
 * tree (default: this checkout) as a child process, so the server's RSS and exit are its own, and prints one line.
 *
 *   node tools/serve-hostile-probe.mjs --student RUN [--src DIR] [--only p1,p3] [--json]
 *
 * --src points at another checkout (e.g. an older commit unpacked with `git archive`) to compare before/after.
 * The probes wait for what they can observe; the few fixed pauses only give a client's bytes time to arrive
 * and are not what is measured.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({ options: { student: { type: 'string' }, src: { type: 'string' }, only: { type: 'string' }, json: { type: 'boolean' } } });
if (!args.student) throw new Error('--student RUN is required');
const src = resolve(args.src ?? join(dirname(fileURLToPath(import.meta.url)), '..'));
const student = resolve(args.student);
const pause = (ms) => new Promise((r) => setTimeout(r, ms));

function serve(extra = []) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--student', student, '--port', '0', '--host', '127.0.0.1', ...extra], { cwd: src, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  const exit = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal, at: performance.now() })));
  return new Promise((ok, fail) => {
    child.stderr.setEncoding('utf8').on('data', (d) => {
      err += d;
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(err);
      if (m) ok({ child, port: Number(m[1]), exit, stderr: () => err });
    });
    child.on('exit', () => fail(new Error(`serve exited before listening: ${err.slice(-400)}`)));
  });
}

const rssMiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;

/** Send raw bytes, read one HTTP response (or the error/close that came instead). */
function raw(port, bytes, { timeoutMs = 20_000 } = {}) {
  const headOnly = typeof bytes === 'string' && bytes.startsWith('HEAD ');
  return new Promise((done) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const finish = (r) => {
      clearTimeout(t);
      s.destroy();
      done(r);
    };
    const t = setTimeout(() => finish({ status: 'no answer (timeout)' }), timeoutMs);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const text = buf.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = text.slice(0, end);
      const len = headOnly ? 0 : Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length >= end + 4 + len) finish({ status: Number(head.split(' ')[1]), head, body: text.slice(end + 4, end + 4 + len) });
    });
    s.on('error', (e) => finish({ status: e.code }));
    s.on('close', () => finish({ status: 'closed, no answer' }));
    if (typeof bytes === 'function') bytes(s);
    else s.write(bytes);
  });
}

const post = (body, extra = '') => `POST /recommend HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;

async function stop(srv, limitMs = 30_000) {
  const t0 = performance.now();
  srv.child.kill('SIGTERM');
  const r = await Promise.race([srv.exit, pause(limitMs).then(() => null)]);
  if (!r) {
    srv.child.kill('SIGKILL');
    await srv.exit;
    return `still running ${limitMs / 1000} s after SIGTERM (killed)`;
  }
  return `exit ${r.code ?? r.signal} after ${((r.at - t0) / 1000).toFixed(2)} s`;
}

const probes = {
  async p1_sigterm_incomplete_request() {
    const srv = await serve();
    const s = net.connect(srv.port, '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    s.write('POST /recommend HTTP/1.1\r\nHost: x\r\n');
    await pause(300);
    const r = await stop(srv);
    s.destroy();
    return r;
  },
  async p2_sigterm_keepalive_pool() {
    const srv = await serve();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
    let afterTerm = 0;
    let termAt = 0;
    let running = true;
    const body = JSON.stringify({ history: ['1', '2', '3'], k: 10 });
    const one = () =>
      new Promise((ok, fail) => {
        const req = http.request({ port: srv.port, host: '127.0.0.1', path: '/recommend', method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
          res.resume();
          res.on('end', () => ok(res.statusCode));
        });
        req.on('error', fail);
        req.end(body);
      });
    const client = async () => {
      while (running) {
        try {
          await one();
          if (termAt) afterTerm++;
        } catch {
          if (termAt) return;
        }
      }
    };
    const clients = Array.from({ length: 32 }, client);
    await pause(1000);
    termAt = performance.now();
    const r = await stop(srv);
    running = false;
    await Promise.all(clients);
    agent.destroy();
    return `${afterTerm} answers after SIGTERM; ${r}`;
  },
  async p3_rss_200_stalled_bodies() {
    const srv = await serve();
    await raw(srv.port, post(JSON.stringify({ history: ['1'] })));
    await pause(500);
    const idle = rssMiB(srv.child.pid);
    const statuses = {};
    const body = Buffer.alloc((1 << 20) - 1, 0x20);
    const socks = [];
    for (let i = 0; i < 200; i++) {
      const s = net.connect(srv.port, '127.0.0.1');
      s.on('error', () => {});
      s.on('data', (d) => {
        const st = d.toString('latin1').split(' ')[1];
        statuses[st] = (statuses[st] ?? 0) + 1;
      });
      s.write(`POST /recommend HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: ${1 << 20}\r\n\r\n`);
      s.write(body);
      socks.push(s);
    }
    let peak = idle;
    for (let i = 0; i < 30; i++) {
      await pause(200);
      peak = Math.max(peak, rssMiB(srv.child.pid));
    }
    const at6 = rssMiB(srv.child.pid);
    const seen6 = JSON.stringify(statuses);
    for (let i = 0; i < 30; i++) {
      await pause(200);
      peak = Math.max(peak, rssMiB(srv.child.pid));
    }
    const at12 = rssMiB(srv.child.pid);
    for (const s of socks) s.destroy();
    const r = await stop(srv);
    return `RSS idle ${idle.toFixed(0)} MiB, peak ${peak.toFixed(0)} MiB (+${(peak - idle).toFixed(0)}), at 6 s ${at6.toFixed(0)}, at 12 s ${at12.toFixed(0)}; answers by 6 s ${seen6}, by 12 s ${JSON.stringify(statuses)}; ${r}`;
  },
  async p4_rss_unread_pipelined() {
    const srv = await serve();
    const one = post(JSON.stringify({ history: ['1', '2', '3'], k: 300 }));
    for (let i = 0; i < 50; i++) await raw(srv.port, one); // warm-up: the same answers, read
    await pause(500);
    const idle = rssMiB(srv.child.pid);
    const socks = [];
    for (let c = 0; c < 4; c++) {
      const s = net.connect(srv.port, '127.0.0.1');
      s.on('error', () => {});
      s.pause(); // never read
      s.write(one.repeat(1000));
      socks.push(s);
    }
    let peak = idle;
    for (let i = 0; i < 40; i++) {
      await pause(200);
      peak = Math.max(peak, rssMiB(srv.child.pid));
    }
    for (const s of socks) s.destroy();
    const r = await stop(srv);
    return `4 clients x 1000 pipelined k=300, never read: RSS idle ${idle.toFixed(0)} MiB, peak ${peak.toFixed(0)} MiB (+${((peak - idle) / 4).toFixed(1)} MiB per client); ${r}`;
  },
  async p5_bad_requests() {
    const srv = await serve();
    const out = [];
    const show = (name, r) => out.push(`${name}: ${r.status}${r.body ? ` ${r.body.slice(0, 70)}` : ''}`);
    show('empty history', await raw(srv.port, post('{"history": []}')));
    show('deep nesting', await raw(srv.port, post(`{"history": ${'['.repeat(10_000)}${']'.repeat(10_000)}}`)));
    show('target //[', await raw(srv.port, 'GET //[ HTTP/1.1\r\nHost: x\r\n\r\n'));
    show('HEAD /health', await raw(srv.port, 'HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n'));
    const info = await raw(srv.port, 'GET /info HTTP/1.1\r\nHost: x\r\n\r\n');
    out.push(`/info dir: ${JSON.parse(info.body).dir}`);
    show('chunked 2 MiB body', await raw(srv.port, (s) => {
      s.write('POST /recommend HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n');
      const chunk = `10000\r\n${' '.repeat(0x10000)}\r\n`;
      let n = 0;
      const more = () => {
        while (n < 32) {
          n++;
          if (!s.write(chunk)) return s.once('drain', more);
        }
        s.write('0\r\n\r\n');
      };
      more();
    }));
    const pipelined = await new Promise((done) => {
      const s = net.connect(srv.port, '127.0.0.1');
      const counts = {};
      let buf = '';
      s.setEncoding('latin1').on('data', (d) => {
        buf += d;
        for (const m of buf.matchAll(/HTTP\/1\.1 (\d+)/g)) counts[m[1]] = (counts[m[1]] ?? 0) + 1;
        buf = buf.slice(buf.lastIndexOf('HTTP/1.1') + 8);
        if (Object.values(counts).reduce((a, b) => a + b, 0) >= 300) done(counts);
      });
      s.on('error', (e) => done({ error: e.code, ...counts }));
      s.write(post(JSON.stringify({ history: ['1', '2'] })).repeat(300));
    });
    out.push(`300 pipelined: ${JSON.stringify(pipelined)}`);
    await stop(srv);
    const q0 = await serve(['--queue', '0']);
    show('--queue 0, idle', await raw(q0.port, post(JSON.stringify({ history: ['1'] }))));
    const many = await Promise.all(Array.from({ length: 16 }, () => raw(q0.port, post(JSON.stringify({ history: ['1', '2'], k: 300 })))));
    const busy = many.filter((r) => r.status === 503);
    out.push(`--queue 0, 16 at once: ${busy.length} x 503, ${busy.filter((r) => /retry-after/i.test(r.head)).length} with Retry-After`);
    await stop(q0);
    return out.join('\n    ');
  },
  async p6_connection_cap() {
    const srv = await serve();
    const socks = [];
    for (let i = 0; i < 600; i++) {
      const s = net.connect(srv.port, '127.0.0.1');
      s.on('error', () => {});
      socks.push(s);
      await new Promise((r) => s.once('connect', r));
    }
    await pause(300);
    const r = await raw(srv.port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    for (const s of socks) s.destroy();
    await stop(srv);
    return `/health with 600 idle connections open: ${r.status}${r.head && /retry-after/i.test(r.head) ? ' (Retry-After)' : ''}`;
  },
};

const only = args.only?.split(',');
const results = {};
for (const [name, probe] of Object.entries(probes)) {
  if (only && !only.some((o) => name.startsWith(o))) continue;
  const t0 = performance.now();
  results[name] = await probe();
  console.log(`${name} (${((performance.now() - t0) / 1000).toFixed(1)} s): ${results[name]}`);
}
if (args.json) console.log(JSON.stringify({ src, results }));
