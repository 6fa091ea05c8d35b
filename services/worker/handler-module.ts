import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { StageHandler } from '../../sdk/worker';

/**
 * Loads the module named by `dsat worker --handler`: its exported functions are the stage
 * handlers, by name (`export async function resize(input, ctx)` serves stage `resize`). A default
 * export that is an object of functions works too, and so does `export const handlers = {...}`.
 * .ts files load through tsx, registered here when dsat itself runs compiled (dist/).
 */
export async function loadHandlerModule(file: string): Promise<Record<string, StageHandler>> {
  const abs = path.resolve(file);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  if (/\.[cm]?ts$/.test(abs) && !__filename.endsWith('.ts')) require('tsx/cjs');
  let mod: unknown;
  try {
    mod = createRequire(__filename)(abs) as unknown;
  } catch (err) {
    if ((err as { code?: string }).code !== 'ERR_REQUIRE_ESM') throw err;
    mod = (await import(pathToFileURL(abs).href)) as unknown;
  }
  const found: Record<string, StageHandler> = {};
  const collect = (o: unknown) => {
    if (o === null || typeof o !== 'object') return;
    for (const [k, v] of Object.entries(o)) {
      if (typeof v === 'function' && k !== 'default' && !(k in found)) found[k] = v as StageHandler;
    }
  };
  const m = mod as Record<string, unknown>;
  collect(m.handlers);
  collect(m);
  if (m.default !== null && typeof m.default === 'object') collect(m.default);
  if (Object.keys(found).length === 0) {
    throw new Error(`${file} exports no handler functions (export one function per stage)`);
  }
  return found;
}
