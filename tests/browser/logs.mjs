// Where the processes the Node suites start (interop and browser) write their output:
// GATEHOUSE_TEST_LOGS (scripts/test sets it), else target/test-logs. The files are kept after
// the run: the `secrets` suite of scripts/test fails on any token, key or password in them.
import { createWriteStream, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
let next = 0;

export function logDir() {
  const target = process.env.CARGO_TARGET_DIR ? resolve(root, process.env.CARGO_TARGET_DIR) : join(root, 'target');
  const dir = process.env.GATEHOUSE_TEST_LOGS || join(target, 'test-logs');
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Copies `child`'s stdout and stderr (spawned with 'pipe') into a new log file; returns its path. */
export function logChild(child, name) {
  const path = join(logDir(), `${name}-${process.pid}-${next++}.log`);
  const out = createWriteStream(path, { flags: 'a' });
  child.stdout?.on('data', (d) => out.write(d));
  child.stderr?.on('data', (d) => out.write(d));
  child.once('close', () => out.end());
  return path;
}
