/**
 * Child trainers for the resume-after-SIGKILL tests: run a fixture script under tsx, either to its end or killed
 * once it reports an epoch (the fixture sleeps after each checkpoint, so the kill lands between epochs).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..', '..');

export function startChild(script: string, args: string[]): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', script, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Resolves with the child's output when it exits 0; rejects with it otherwise. */
export function runToEnd(script: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = startChild(script, args);
    let text = '';
    p.stdout!.on('data', (d: Buffer) => (text += d.toString()));
    p.stderr!.on('data', (d: Buffer) => (text += d.toString()));
    p.on('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`child exited ${code}: ${text}`))));
  });
}

/** SIGKILLs the child as soon as it prints `epoch N`; rejects (with its output) if it exits any other way. */
export function killAfterEpoch(script: string, args: string[], epoch: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = startChild(script, args);
    let text = '';
    p.stderr!.on('data', (d: Buffer) => (text += d.toString()));
    p.stdout!.on('data', (d: Buffer) => {
      text += d.toString();
      if (d.toString().includes(`epoch ${epoch}`)) p.kill('SIGKILL');
    });
    p.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve() : reject(new Error(`child was not killed (exit ${code}): ${text.slice(-1500)}`))));
  });
}
