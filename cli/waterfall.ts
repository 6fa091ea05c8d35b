import type { StoredSpan } from '../services/shared/span-store';

const KIND_NAMES = ['', 'internal', 'server', 'client', 'producer', 'consumer'];

const count = (n: number, noun: string) => `${n} ${noun}${n === 1 ? '' : 's'}`;

function ms(nanos: bigint): string {
  return `${(Number(nanos) / 1e6).toFixed(2)} ms`;
}

/**
 * Draws one trace as a waterfall: each span indented under its parent, with its service, its
 * offset from the trace's start, its duration, and a bar on a shared time scale.
 */
export function renderWaterfall(spans: readonly StoredSpan[], width = 40): string {
  if (spans.length === 0) return 'no spans';
  const start = spans.reduce(
    (m, s) => (BigInt(s.startTimeUnixNano) < m ? BigInt(s.startTimeUnixNano) : m),
    BigInt(spans[0]!.startTimeUnixNano),
  );
  const end = spans.reduce(
    (m, s) => (BigInt(s.endTimeUnixNano) > m ? BigInt(s.endTimeUnixNano) : m),
    0n,
  );
  const total = end - start > 0n ? end - start : 1n;
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map<string, StoredSpan[]>();
  for (const s of spans) {
    const parent = s.parentSpanId && ids.has(s.parentSpanId) ? s.parentSpanId : '';
    const list = children.get(parent) ?? [];
    list.push(s);
    children.set(parent, list);
  }
  const byStart = (a: StoredSpan, b: StoredSpan) =>
    BigInt(a.startTimeUnixNano) < BigInt(b.startTimeUnixNano) ? -1 : 1;
  const rows: { label: string; s: StoredSpan }[] = [];
  const walk = (parent: string, depth: number) => {
    for (const s of (children.get(parent) ?? []).sort(byStart)) {
      rows.push({ label: '  '.repeat(depth) + s.name, s });
      walk(s.spanId, depth + 1);
    }
  };
  walk('', 0);
  const labelWidth = Math.max(4, ...rows.map((r) => r.label.length));
  const serviceWidth = Math.max(7, ...rows.map((r) => r.s.serviceName.length));
  const services = new Set(spans.map((s) => s.serviceName));
  const lines = [
    `trace ${spans[0]!.traceId}  ${count(spans.length, 'span')}, ${count(services.size, 'service')}, ${ms(total)}`,
    `${'span'.padEnd(labelWidth)}  ${'service'.padEnd(serviceWidth)}  ${'offset'.padStart(11)}  ${'duration'.padStart(11)}  timeline`,
  ];
  for (const { label, s } of rows) {
    const offset = BigInt(s.startTimeUnixNano) - start;
    const duration = BigInt(s.endTimeUnixNano) - BigInt(s.startTimeUnixNano);
    const from = Number((offset * BigInt(width)) / total);
    const len = Math.max(1, Number((duration * BigInt(width)) / total));
    const bar =
      ' '.repeat(Math.min(from, width - 1)) +
      '█'.repeat(Math.min(len, width - Math.min(from, width - 1)));
    const flags = [
      s.statusCode === 2 ? `ERROR${s.statusMessage ? ': ' + s.statusMessage : ''}` : '',
      s.attributes['dsat.attempt'] !== undefined ? `attempt ${s.attributes['dsat.attempt']}` : '',
      KIND_NAMES[s.kind] === 'producer' || KIND_NAMES[s.kind] === 'consumer'
        ? KIND_NAMES[s.kind]!
        : '',
    ].filter(Boolean);
    lines.push(
      `${label.padEnd(labelWidth)}  ${s.serviceName.padEnd(serviceWidth)}  ${ms(offset).padStart(11)}  ${ms(duration).padStart(11)}  ${bar.padEnd(width)}${flags.length ? '  ' + flags.join(', ') : ''}`,
    );
  }
  return lines.join('\n');
}
