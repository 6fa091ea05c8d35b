import { StatusServiceDefinition } from '../../gen/dsat/status/v1/status';
import type { StatusConfig } from '../shared/config';
import { serviceEntry, startGrpcServer, stopServerOnShutdown } from '../shared/grpc-server';
import type { ServiceDeps, ServiceHandle } from '../shared/service-host';
import { hostShutdown } from '../shared/service-host';
import { replyBudget } from './reply-size';
import { createStatusService } from './status-service';
import { statusMetrics } from './status-metrics';
import { openStatusStore } from './status-store';

export async function startStatusServer(
  config: StatusConfig,
  deps: ServiceDeps,
): Promise<ServiceHandle> {
  const shutdown = hostShutdown(deps);
  // Opening checks the store and fails fast (LEVEL_LOCKED, damage) before any port is bound.
  const metrics = statusMetrics();
  const store = await openStatusStore({
    onCommitted: metrics.onCommitted,
    dir: config.dataDir,
    sync: config.sync,
    repair: config.repair,
    retentionMs: config.retention,
    feedWindowMs: config.feedWindow,
    maxReplyBytes: replyBudget(config.maxMessageSize),
    lockWaitMs: config.lockWait,
    maxUnfinishedBytes: config.maxUnfinishedBytes || undefined,
    onFailure: (err) => {
      deps.logger.fatal({ err }, 'status store failed a write; stopping, a restart recovers it');
      if (deps.onFatal) deps.onFatal(err);
      else void shutdown.run('status store failed a write', { urgent: true });
    },
  });
  metrics.observe(() => store.stats());
  const report = store.openReport;
  deps.logger.info({ ...report, lost: report.lost.length }, 'status store open');
  if (report.repaired)
    deps.logger.warn({ lost: report.lost, damagedTasks: report.damagedTasks }, 'store repaired');
  let server;
  try {
    server = await startGrpcServer({
      name: 'status',
      config,
      logger: deps.logger,
      services: [
        serviceEntry(StatusServiceDefinition, createStatusService(store), [
          'applyTransitions',
          'watchEvents',
          'watchTask',
        ]),
      ],
    });
  } catch (err) {
    metrics.stop();
    await store.close();
    throw err;
  }
  stopServerOnShutdown(shutdown, 'status', server);
  shutdown.on('close-store', 'status store', () => {
    metrics.stop();
    return store.close();
  });
  return { name: 'status', address: server.address, shutdown: () => shutdown.run('stop') };
}
