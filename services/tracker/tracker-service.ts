import type { ServiceImplementation } from 'nice-grpc';
import type { TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import { msDuration } from '../shared/proto-duration';
import type { TerminatorContext } from '../shared/terminator';
import type { DeadLetters } from './dead-letters';
import type { Membership } from './membership';
import type { Pipelines } from './pipelines';

export interface TrackerServiceDeps {
  readonly pipelines: Pipelines;
  readonly deadLetters: DeadLetters;
  readonly membership: Membership;
}

/** `dsat.tracker.v1.TrackerService`: thin handlers over the tracker's domain modules. */
export function createTrackerService(
  deps: TrackerServiceDeps,
): ServiceImplementation<typeof TrackerServiceDefinition, TerminatorContext> {
  const { pipelines, deadLetters, membership } = deps;
  return {
    applyPipeline: (req) => pipelines.applyPipeline(req.pipeline, req.validateOnly),
    getPipeline: async (req) => ({ pipeline: await pipelines.get(req.name, req.version) }),
    listPipelines: (req) => pipelines.list(req.pageSize || 100, req.pageToken),
    listDeadLettered: (req) => deadLetters.list(req),
    redriveTasks: async (req) => ({ taskIds: await deadLetters.redrive(req.taskIds, req.filter) }),
    purgeTasks: async (req) => ({ purgedCount: await deadLetters.purge(req.taskIds, req.filter) }),
    async join(req) {
      const joined = membership.join(req.member);
      return {
        memberId: joined.memberId,
        heartbeatInterval: msDuration(joined.heartbeatIntervalMs),
        memberTtl: msDuration(joined.memberTtlMs),
      };
    },
    heartbeat: async (req) => ({ known: membership.heartbeat(req.memberId, req.stages) }),
    async leave(req) {
      membership.leave(req.memberId);
      return {};
    },
    resolveStage: async (req) => ({ routers: membership.resolveStage(req.stage) }),
    getMesh: async () => membership.mesh(),
  };
}
