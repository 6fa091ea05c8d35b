#!/usr/bin/env node
// Runs the TypeScript sources directly; tsx compiles each file once on load.
require('tsx/cjs');
require('../cli/main.ts');
