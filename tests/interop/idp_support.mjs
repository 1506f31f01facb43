// Starts `gatehouse idp` (GATEHOUSE_BIN) on free ports with a temporary --data directory,
// for the Node interop and browser suites.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { logChild } from '../browser/logs.mjs';

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function startIdp(extraArgs = []) {
  const bin = process.env.GATEHOUSE_BIN;
  if (!bin) throw new Error('GATEHOUSE_BIN must point at the built gatehouse binary');
  const port = await freePort();
  const data = mkdtempSync(join(tmpdir(), 'gh-idp-'));
  const proc = spawn(bin, ['idp', '--listen', `127.0.0.1:${port}`, '--data', data, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  logChild(proc, 'node-idp');
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const lines = createInterface({ input: proc.stdout });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gatehouse idp did not start: ${stderr}`)), 30000);
    lines.once('line', (line) => {
      clearTimeout(timer);
      if (line.includes('listening')) resolve();
      else reject(new Error(`unexpected output: ${line} ${stderr}`));
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`gatehouse idp exited with ${code}: ${stderr}`));
    });
  });
  const base = `http://127.0.0.1:${port}`;
  return {
    base,
    port,
    async stop() {
      proc.kill('SIGTERM');
      await new Promise((r) => (proc.exitCode !== null ? r() : proc.once('exit', r)));
      rmSync(data, { recursive: true, force: true });
    },
  };
}

export function decodeClaims(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
}
