import { randomUUID } from 'node:crypto';
import type { StageLoad } from '../../gen/dsat/router/v1/router';
import type { Member, StageMesh } from '../../gen/dsat/tracker/v1/tracker';
import { MemberKind } from '../../gen/dsat/tracker/v1/tracker';
import type { FieldViolation } from '../shared/errors';
import { invalidArgument, invalidArguments } from '../shared/errors';
import type { Clock } from './monotonic-clock';
import { NAME_PATTERN } from '../shared/pipeline-validation';
import type { PoolFigures, ScalingAdvisor } from './scaling-advice';
import { createScalingAdvisor } from './scaling-advice';

/** The window of `error_rate`: the fraction of attempts that failed over the last minute. */
export const ERROR_RATE_WINDOW_MS = 60_000;
const ADDRESS = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

export interface JoinAnswer {
  readonly memberId: string;
  readonly heartbeatIntervalMs: number;
  readonly memberTtlMs: number;
}

/** The mesh as `GetMesh` returns it. */
export interface MeshView {
  readonly members: Member[];
  readonly stages: StageMesh[];
}

export interface Membership {
  /** Adds (or replaces, for a known id) a member; an empty id gets one. */
  join(member: Member | undefined): JoinAnswer;
  /** Keeps a member alive and records a router's stage loads; false when it is not known. */
  heartbeat(memberId: string, loads: readonly StageLoad[]): boolean;
  /** Removes a member at once; false when it was not known. */
  leave(memberId: string): boolean;
  /** The live routers that serve `stage` (a router with no stages serves every stage). */
  resolveStage(stage: string): Member[];
  mesh(): MeshView;
  /** Drops members silent for longer than the TTL; returns their ids. */
  expire(): string[];
}

export interface MembershipOptions {
  readonly clock: Clock;
  /** A member silent for longer is dropped. */
  readonly memberTtlMs: number;
  /** What members are told; default a third of the TTL, so two beats may be lost. */
  readonly heartbeatIntervalMs?: number;
  readonly advisor?: ScalingAdvisor;
  readonly onDropped?: (member: Member) => void;
}

interface Sample {
  readonly at: number;
  readonly completed: number;
  readonly failed: number;
}

interface Record {
  member: Member;
  lastSeen: number;
  loads: Map<string, StageLoad>;
  /** Per stage, the counters reported over the error-rate window (and one just before it). */
  samples: Map<string, Sample[]>;
}

/** The newest report at or before the window's start, else the oldest one. */
function baseline(samples: readonly Sample[], now: number): Sample {
  let base = samples[0] as Sample;
  for (const s of samples) {
    if (s.at > now - ERROR_RATE_WINDOW_MS) break;
    base = s;
  }
  return base;
}

function checkMember(member: Member | undefined): Member {
  if (member === undefined) throw invalidArgument('member', 'is required');
  const problems: FieldViolation[] = [];
  if (member.memberId.length > 128) {
    problems.push({ field: 'member.member_id', description: 'is longer than 128 characters' });
  } else if (/\p{Cc}/u.test(member.memberId)) {
    problems.push({ field: 'member.member_id', description: 'holds a control character' });
  }
  if (
    member.kind === MemberKind.MEMBER_KIND_UNSPECIFIED ||
    MemberKind[member.kind] === undefined ||
    member.kind === MemberKind.UNRECOGNIZED
  ) {
    problems.push({
      field: 'member.kind',
      description: 'must be a member kind (ROUTER, WORKER, …)',
    });
  }
  if (member.kind === MemberKind.MEMBER_KIND_ROUTER && member.address === '') {
    problems.push({
      field: 'member.address',
      description: 'a router must give the address it serves on',
    });
  } else if (member.address !== '') {
    const port = Number(ADDRESS.exec(member.address)?.[2] ?? 0);
    if (port < 1 || port > 65_535) {
      problems.push({
        field: 'member.address',
        description: `${JSON.stringify(member.address.slice(0, 300))} is not host:port with a port from 1 to 65535`,
      });
    }
  }
  if (member.version.length > 64) {
    problems.push({ field: 'member.version', description: 'is longer than 64 characters' });
  }
  const labels = Object.entries(member.labels);
  if (labels.length > 64) {
    problems.push({
      field: 'member.labels',
      description: `has ${labels.length} labels, at most 64`,
    });
  }
  for (const [key, value] of labels) {
    if (key.length > 128 || value.length > 256) {
      problems.push({
        field: `member.labels[${JSON.stringify(key.slice(0, 64))}]`,
        description: 'keys are at most 128 characters, values 256',
      });
    }
  }
  member.stages.forEach((s, i) => {
    if (!NAME_PATTERN.test(s)) {
      problems.push({
        field: `member.stages[${i}]`,
        description: `${JSON.stringify(s)} is not a stage name`,
      });
    }
  });
  if (problems.length > 0) throw invalidArguments(problems, 'INVALID_MEMBER');
  return member;
}

/** Most workers one router may say a stage has: more is a bad report, not a mesh. */
const MAX_REPORTED_WORKERS = 100_000;

/** A router's load report, checked before any of it counts (scaling advice reads these sums). */
function checkLoads(loads: readonly StageLoad[]): void {
  const problems: FieldViolation[] = [];
  if (loads.length > 10_000) {
    problems.push({ field: 'stages', description: `has ${loads.length} entries, at most 10000` });
  }
  loads.slice(0, 10_000).forEach((l, i) => {
    if (!NAME_PATTERN.test(l.stage)) {
      problems.push({
        field: `stages[${i}].stage`,
        description: `${JSON.stringify(l.stage.slice(0, 80))} is not a stage name`,
      });
    }
    if (l.workers > MAX_REPORTED_WORKERS) {
      problems.push({
        field: `stages[${i}].workers`,
        description: `${l.workers} is more than the ${MAX_REPORTED_WORKERS} a router can hold`,
      });
    }
    if (!Number.isFinite(l.throughputPerS) || l.throughputPerS < 0) {
      problems.push({
        field: `stages[${i}].throughput_per_s`,
        description: `must be a finite number of at least 0, not ${l.throughputPerS}`,
      });
    }
  });
  if (problems.length > 0) throw invalidArguments(problems, 'INVALID_LOAD');
}

const serves = (m: Member, stage: string) => m.stages.length === 0 || m.stages.includes(stage);
const byId = (a: Member, b: Member) =>
  a.memberId < b.memberId ? -1 : a.memberId > b.memberId ? 1 : 0;

/**
 * The members of the mesh and their load (PYDEVTS's cluster, DSAT's satellites). Members join
 * through the tracker's configured address only; there is no way to found a second cluster.
 * A member silent past the TTL is dropped; a heartbeat from it then answers `known: false` and
 * it joins again. Figures per stage are the sums of the routers' reported `StageLoad`s.
 */
export function createMembership(options: MembershipOptions): Membership {
  const { clock, memberTtlMs } = options;
  const heartbeatIntervalMs =
    options.heartbeatIntervalMs ?? Math.max(100, Math.floor(memberTtlMs / 3));
  const advisor = options.advisor ?? createScalingAdvisor();
  const members = new Map<string, Record>();

  const expire = () => {
    const now = clock.monotonicMs();
    const dropped: string[] = [];
    for (const [id, r] of members) {
      if (now - r.lastSeen > memberTtlMs) {
        members.delete(id);
        dropped.push(id);
        options.onDropped?.(r.member);
      }
    }
    return dropped;
  };

  const routers = () =>
    [...members.values()].filter((r) => r.member.kind === MemberKind.MEMBER_KIND_ROUTER);

  /** The figures of a stage, summed over the routers' latest reports. */
  const figures = (stage: string): PoolFigures & { throughput: number; errorRate: number } => {
    let workers = 0;
    let freeCredit = 0;
    let inFlight = 0;
    let queueDepth = 0;
    let throughput = 0;
    let failed = 0;
    let attempts = 0;
    for (const r of routers()) {
      const l = r.loads.get(stage);
      if (l === undefined) continue;
      workers += l.workers;
      freeCredit += l.freeCredit;
      inFlight += l.inFlight;
      queueDepth += l.queueDepth;
      throughput += l.throughputPerS;
      const samples = r.samples.get(stage) ?? [];
      const last = samples[samples.length - 1];
      const base = samples.length > 1 ? baseline(samples, clock.monotonicMs()) : undefined;
      if (last !== undefined) {
        // A counter that went backwards restarted: count from zero.
        const restarted =
          base !== undefined && (last.completed < base.completed || last.failed < base.failed);
        const b = base === undefined || restarted ? { completed: 0, failed: 0 } : base;
        failed += last.failed - b.failed;
        attempts += last.completed - b.completed + (last.failed - b.failed);
      }
    }
    return {
      workers,
      freeCredit,
      inFlight,
      queueDepth,
      throughput,
      errorRate: attempts === 0 ? 0 : failed / attempts,
    };
  };

  const stageNames = () => {
    const names = new Set<string>();
    for (const r of members.values()) {
      for (const s of r.member.stages) names.add(s);
      for (const s of r.loads.keys()) names.add(s);
    }
    return [...names].sort();
  };

  return {
    join(input) {
      expire();
      const m = checkMember(input);
      const memberId =
        m.memberId !== ''
          ? m.memberId
          : `${MemberKind[m.kind].replace('MEMBER_KIND_', '').toLowerCase()}-${randomUUID()}`;
      const now = new Date(clock.wallMs());
      members.set(memberId, {
        member: {
          ...m,
          memberId,
          stages: [...m.stages],
          labels: { ...m.labels },
          joinedAt: now,
          lastSeenAt: now,
        },
        lastSeen: clock.monotonicMs(),
        loads: new Map(),
        samples: new Map(),
      });
      return { memberId, heartbeatIntervalMs, memberTtlMs };
    },

    heartbeat(memberId, loads) {
      checkLoads(loads);
      expire();
      const r = members.get(memberId);
      if (r === undefined) return false;
      const now = clock.monotonicMs();
      r.lastSeen = now;
      r.member.lastSeenAt = new Date(clock.wallMs());
      if (r.member.kind !== MemberKind.MEMBER_KIND_ROUTER) return true;
      for (const l of loads) {
        r.loads.set(l.stage, l);
        const samples = r.samples.get(l.stage) ?? [];
        samples.push({ at: now, completed: l.completed, failed: l.failed });
        // Keep the window, plus the newest sample older than it as the baseline.
        while (samples.length > 2 && (samples[1] as Sample).at <= now - ERROR_RATE_WINDOW_MS)
          samples.shift();
        r.samples.set(l.stage, samples);
      }
      for (const l of loads) advisor.observe(l.stage, figures(l.stage));
      return true;
    },

    leave(memberId) {
      return members.delete(memberId);
    },

    resolveStage(stage) {
      if (!NAME_PATTERN.test(stage))
        throw invalidArgument('stage', `${JSON.stringify(stage)} is not a stage name`);
      expire();
      return routers()
        .map((r) => r.member)
        .filter((m) => serves(m, stage))
        .sort(byId);
    },

    mesh() {
      expire();
      const live = [...members.values()].map((r) => r.member).sort(byId);
      const stages = stageNames().map((stage): StageMesh => {
        const f = figures(stage);
        return {
          stage,
          workers: f.workers,
          freeCredit: f.freeCredit,
          inFlight: f.inFlight,
          queueDepth: f.queueDepth,
          throughputPerS: f.throughput,
          errorRate: f.errorRate,
          advice: advisor.advice(stage, f),
          routerIds: routers()
            .map((r) => r.member)
            .filter((m) => serves(m, stage))
            .map((m) => m.memberId)
            .sort(),
        };
      });
      return { members: live, stages };
    },

    expire,
  };
}
