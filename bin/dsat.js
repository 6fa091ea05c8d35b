#!/usr/bin/env node
// Runs dist/ (`npm run build`) while it is newer than every source file; otherwise the
// TypeScript sources, which tsx compiles on load. DSAT_FROM_SOURCE=1 always runs the sources.
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');

/** The newest mtime of the .ts files at `file` (a file or a folder); 0 when absent. */
function newestSource(file) {
  let stat;
  try {
    stat = fs.statSync(file);
  } catch {
    return 0; // an image may ship dist/ without some sources
  }
  if (!stat.isDirectory()) return file.endsWith('.ts') ? stat.mtimeMs : 0;
  let newest = 0;
  for (const name of fs.readdirSync(file)) {
    newest = Math.max(newest, newestSource(path.join(file, name)));
  }
  return newest;
}

function distIsFresh() {
  if (process.env.DSAT_FROM_SOURCE === '1') return false;
  let built;
  try {
    built = fs.statSync(path.join(root, 'dist/BUILT')).mtimeMs;
  } catch {
    return false;
  }
  // What dist/ is compiled from: the build's own list, so the two cannot disagree.
  const { include } = JSON.parse(fs.readFileSync(path.join(root, 'tsconfig.build.json'), 'utf8'));
  return include.every((source) => newestSource(path.join(root, source)) <= built);
}

if (distIsFresh()) {
  require('../dist/cli/main.js');
} else {
  require('tsx/cjs');
  require('../cli/main.ts');
}
