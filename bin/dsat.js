#!/usr/bin/env node
// Runs dist/ (`npm run build`) while it is newer than every source file; otherwise the
// TypeScript sources, which tsx compiles on load. DSAT_FROM_SOURCE=1 always runs the sources.
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const SOURCES = ['services', 'sdk', 'cli', 'gen', 'bench/pipeline3'];

function newestSource(dir, newest) {
  let entries;
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return newest; // an image may ship dist/ without some sources
  }
  for (const entry of entries) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = newestSource(file, newest);
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, fs.statSync(file).mtimeMs);
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
  return SOURCES.every((dir) => newestSource(path.join(root, dir), 0) <= built);
}

if (distIsFresh()) {
  require('../dist/cli/main.js');
} else {
  require('tsx/cjs');
  require('../cli/main.ts');
}
